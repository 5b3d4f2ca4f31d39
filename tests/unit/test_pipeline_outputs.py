"""What a pipeline may return (PipelineOutput, a Scope-style dict, None) and what the runner
does when one raises: generation ends, the reason is kept and reported once."""

from __future__ import annotations

import asyncio
import math
import threading

import numpy as np
import pytest
import torch

from scope_relay.cloud.hosting.runner import PipelineRunner
from scope_relay.cloud.pipelines import Pipeline, PipelineOutput
from scope_relay.cloud.pipelines.outputs import as_pipeline_output
from scope_relay.cloud.sessions.media_buffer import MediaBuffer
from scope_relay.testing import dominant_frequency


class Named(Pipeline):
    pipeline_id = "named"
    name = "Named"
    produces_audio = True


@pytest.fixture
def loop():
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def test_none_and_pipeline_output_pass_through():
    out = PipelineOutput(audio=np.zeros((1, 10), np.float32), sample_rate=16_000)
    assert as_pipeline_output(None, Named()) is None
    assert as_pipeline_output(out, Named()) is out


def test_scope_dict_becomes_an_output_and_unknown_keys_are_ignored():
    video = torch.rand(2, 8, 8, 3)
    audio = torch.zeros(2, 441)
    out = as_pipeline_output({"video": video, "audio": audio, "audio_sample_rate": 44_100,
                              "prompt_embeds": object(), "fps": "ignored"}, Named())
    assert out is not None
    assert out.video is video and out.audio is audio and out.sample_rate == 44_100
    assert out.fps is None and out.video_times is None
    numpy_rate = as_pipeline_output({"audio": np.zeros(160, np.float32),
                                     "audio_sample_rate": np.int64(16_000)}, Named())
    assert numpy_rate is not None and numpy_rate.sample_rate == 16_000
    assert type(numpy_rate.sample_rate) is int


def test_a_dict_without_media_means_nothing_yet():
    assert as_pipeline_output({}, Named()) is None
    assert as_pipeline_output({"video": None, "audio": None, "other": 1}, Named()) is None


@pytest.mark.parametrize("result,error,words", [
    ([1, 2, 3], TypeError, "returned list"),
    (np.zeros(4), TypeError, "returned ndarray"),
    ({"audio": np.zeros(4), "audio_sample_rate": "48k"}, TypeError, "audio_sample_rate"),
    ({"audio": np.zeros(4), "audio_sample_rate": 0}, ValueError, "positive whole number"),
    ({"audio": np.zeros(4), "audio_sample_rate": 44_100.5}, ValueError, "positive whole number"),
    ({"audio": np.zeros(4), "audio_sample_rate": True}, TypeError, "audio_sample_rate"),
])
def test_anything_else_is_refused_naming_the_pipeline(result, error, words):
    with pytest.raises(error, match=words) as caught:
        as_pipeline_output(result, Named())
    assert "'named'" in str(caught.value)


class ScopeTone(Pipeline):
    """A Scope pipeline's ``__call__`` body: a dict of tensors (or arrays) per call."""

    pipeline_id = "scope-tone"
    name = "Scope tone"
    produces_audio = True
    produces_video = True
    fps = 10.0

    def __init__(self, rate: int, freqs: list[float], *, as_numpy: bool):
        super().__init__("cpu")
        self.rate, self.freqs, self.as_numpy = rate, freqs, as_numpy
        self.sample = 0

    def __call__(self, inputs, params):
        n = self.rate // 10
        t = (self.sample + np.arange(n)) / self.rate
        self.sample += n
        audio = np.stack([0.5 * np.sin(2 * math.pi * f * t) for f in self.freqs]).astype(np.float32)
        video = np.full((1, 4, 4, 3), 0.5, np.float32)
        if not self.as_numpy:
            return {"video": torch.from_numpy(video), "audio": torch.from_numpy(audio),
                    "audio_sample_rate": self.rate, "extra": "ignored"}
        return {"video": video, "audio": audio[0] if len(self.freqs) == 1 else audio,
                "audio_sample_rate": self.rate}


@pytest.mark.parametrize("rate,freqs,as_numpy", [
    (44_100, [1000.0, 1500.0], False),  # torch, stereo
    (16_000, [700.0], True),  # numpy, mono given as (samples,)
])
def test_scope_dict_audio_reaches_the_buffer_at_48k_on_pitch(loop, rate, freqs, as_numpy):
    buffer = MediaBuffer(loop, max_buffer=60.0)
    runner = PipelineRunner([ScopeTone(rate, freqs, as_numpy=as_numpy)], buffer)
    for _ in range(20):
        assert runner.step()
    total = buffer.audio_buffered
    assert 2.0 * 48_000 - 0.03 * 48_000 <= total <= 2.0 * 48_000  # every second is there
    out = buffer.take_audio(total)
    steady = out[:, 4800:-4800]  # clear of the resampler's start and tail
    expected = freqs if len(freqs) == 2 else freqs * 2  # mono is duplicated
    for channel, freq in zip(steady, expected, strict=True):
        assert dominant_frequency(channel, 48_000) == pytest.approx(freq, rel=0.002)
    # float video in [0, 1] became uint8 frames, one per call at the pipeline's 10 fps
    frames = [buffer.pop_video() for _ in range(20)]
    assert buffer.pop_video() is None
    times = [t for t, _ in frames]
    np.testing.assert_allclose(np.diff(times), 0.1, atol=1e-9)
    assert all(f.dtype == np.uint8 and f.shape == (4, 4, 3) and (f == 128).all()
               for _, f in frames)


class RaisesAfter(Pipeline):
    pipeline_id = "raises-after"
    name = "Raises after"
    produces_audio = True
    sample_rate = 16_000

    def __init__(self, good_calls: int):
        super().__init__("cpu")
        self.left = good_calls
        self.raised = threading.Event()
        self.grad_enabled: list[bool] = []
        self.inference: list[bool] = []

    def __call__(self, inputs, params):
        self.grad_enabled.append(torch.is_grad_enabled())
        self.inference.append(torch.is_inference_mode_enabled())
        if self.left == 0:
            self.raised.set()
            raise RuntimeError("model exploded")
        self.left -= 1
        return PipelineOutput(audio=np.zeros((1, 800), np.float32), sample_rate=16_000)


def test_a_raising_pipeline_ends_generation_and_reports_once(loop, caplog):
    pipeline = RaisesAfter(good_calls=3)
    reported: list[tuple[str, str]] = []
    done = threading.Event()

    def on_failure(pipeline_id: str, reason: str) -> None:
        reported.append((pipeline_id, reason))
        done.set()

    runner = PipelineRunner([pipeline], MediaBuffer(loop), on_failure=on_failure)
    runner.start()
    try:
        assert done.wait(10), "the failure was never reported"
        runner._thread.join(5)  # the worker ends by itself: no retry loop
        assert not runner.running
    finally:
        runner.stop()
    assert reported == [("raises-after", "RuntimeError: model exploded")]
    assert runner.failed == "RuntimeError: model exploded" and runner.failed_pipeline == "raises-after"
    assert runner.counts.pipeline_errors == 1 and len(pipeline.inference) == 4  # called once more: never
    assert all(pipeline.inference) and not any(pipeline.grad_enabled)  # inference_mode
    traced = [r for r in caplog.records if r.exc_info and "raises-after" in r.getMessage()]
    assert traced and "model exploded" in str(traced[0].exc_info[1])


def test_unusable_output_is_a_failure_of_the_pipeline_that_made_it(loop):
    class ReturnsText(Named):
        pipeline_id = "returns-text"

        def __call__(self, inputs, params):
            return "a sound"

    reported: list[tuple[str, str]] = []
    runner = PipelineRunner([ReturnsText()], MediaBuffer(loop),
                            on_failure=lambda pid, why: reported.append((pid, why)))
    with pytest.raises(TypeError, match="'returns-text' returned str"):
        runner.step()  # (driven directly: the caller sees the exception itself)
    runner.start()
    runner._thread.join(5)
    assert not runner.running and runner.failed is not None
    assert reported and reported[0][0] == "returns-text"
    assert reported[0][1].startswith("TypeError: pipeline 'returns-text' returned str")


class MakesYuv(Pipeline):
    """Grey I420 frames (Y 200) with a dark top-left quarter, made as YUV."""

    pipeline_id = "makes-yuv"
    name = "Makes YUV"
    produces_video = True
    fps = 10.0

    def __call__(self, inputs, params):
        frame = np.full((24, 16), 128, np.uint8)  # 16 x 16 picture: 16 rows of Y, 8 of U+V
        frame[:16] = 200
        frame[:8, :8] = 30
        return PipelineOutput(video=frame[None], video_format="yuv420p")


class TakesRgb(Pipeline):
    """Notes what it was given; passes its input on."""

    pipeline_id = "takes-rgb"
    name = "Takes RGB"
    produces_video = True
    accepts_video = True

    def __init__(self) -> None:
        super().__init__("cpu")
        self.seen: list[np.ndarray] = []

    def __call__(self, inputs, params):
        self.seen.extend(f.rgb for f in inputs)
        return PipelineOutput(video=np.stack([f.rgb for f in inputs]))


def test_yuv_frames_reach_the_sender_as_yuv_without_conversion(loop):
    from scope_relay.cloud.sessions.paced_tracks import TimedVideoTrack

    buffer = MediaBuffer(loop, audio_clocked=False, playout_delay=0.0)
    runner = PipelineRunner([MakesYuv()], buffer)
    assert runner.step()
    media_time, picture = buffer._video[0]
    assert picture.shape == (24, 16) and picture.dtype == np.uint8  # kept as I420
    frame = loop.run_until_complete(TimedVideoTrack(buffer).recv())
    assert frame.format.name == "yuv420p" and (frame.width, frame.height) == (16, 16)
    grey = frame.to_ndarray(format="gray")
    assert grey[:8, :8].max() < 40 and grey[8:, 8:].min() > 190


def test_a_yuv_stage_feeding_another_hands_it_rgb(loop):
    taker = TakesRgb()
    runner = PipelineRunner([MakesYuv(), taker], MediaBuffer(loop, audio_clocked=False))
    assert runner.step()
    (rgb,) = taker.seen
    assert rgb.shape == (16, 16, 3) and rgb.dtype == np.uint8
    assert rgb[:8, :8].max() < 40 and rgb[8:, 8:].min() > 190  # grey, so R = G = B


@pytest.mark.parametrize("video,video_format,words", [
    (np.zeros((1, 25, 16), np.uint8), "yuv420p", "H \\* 3 / 2"),  # not a multiple of 3
    (np.zeros((1, 24, 15), np.uint8), "yuv420p", "H \\* 3 / 2"),  # odd width
    (np.zeros((1, 24, 16), np.float32), "yuv420p", "uint8"),
    (np.zeros((1, 16, 16, 3), np.uint8), "nv12", "video_format must be one of"),
])
def test_unusable_yuv_is_refused_with_what_was_expected(loop, video, video_format, words):
    class Bad(MakesYuv):
        def __call__(self, inputs, params):
            return PipelineOutput(video=video, video_format=video_format)

    runner = PipelineRunner([Bad()], MediaBuffer(loop, audio_clocked=False))
    with pytest.raises(ValueError, match=words):
        runner.step()


def test_camera_driven_frames_go_when_made_and_a_chunk_keeps_its_spacing(loop, monkeypatch):
    """``release_when_ready``: a lone frame goes at once however late its media time;
    frames pushed together go out spaced by their media times, not in a burst."""
    import scope_relay.media.pacing as pacing
    from scope_relay.cloud.sessions.paced_tracks import TimedVideoTrack

    now = [100.0]

    async def sleep_on_fake_clock(seconds: float) -> None:
        now[0] += seconds

    monkeypatch.setattr(pacing, "asyncio", type("Asyncio", (), {"sleep": sleep_on_fake_clock}))
    buffer = MediaBuffer(loop, audio_clocked=False, playout_delay=0.0,
                         release_when_ready=True, clock=lambda: now[0])
    track = TimedVideoTrack(buffer)
    picture = np.zeros((4, 4, 3), np.uint8)

    async def send_all() -> list[float]:
        times = []
        while buffer.video_queued():
            await track.recv()
            times.append(now[0])
        return times

    buffer.push([(0.0, picture)], None, 0.1)  # a lone frame: at once
    assert loop.run_until_complete(send_all()) == [100.0]
    now[0] += 5.0  # a frame made long after its media time: still at once
    buffer.push([(0.1, picture)], None, 0.1)
    assert loop.run_until_complete(send_all()) == [105.0]
    buffer.push([(0.2 + 0.1 * k, picture) for k in range(4)], None, 0.1)  # a chunk
    sent = loop.run_until_complete(send_all())
    np.testing.assert_allclose(np.diff([105.0, *sent]), [0.0, 0.1, 0.1, 0.1], atol=1e-9)
