"""A pipeline that changes rate and layout mid-stream: continuous output, no exception."""

from __future__ import annotations

import asyncio
import math

import numpy as np

from scope_relay.cloud.hosting.runner import PipelineRunner
from scope_relay.cloud.pipelines.base import Pipeline, PipelineOutput
from scope_relay.cloud.sessions.media_buffer import MediaBuffer

FREQ = 440.0
CHUNK = 0.1  # seconds per call


class Shifter(Pipeline):
    """A phase-continuous 440 Hz sine whose rate/channels follow a schedule."""

    pipeline_id = "shifter"
    name = "Shifter"
    produces_audio = True
    sample_rate = 24_000

    def __init__(self, schedule):
        super().__init__("cpu")
        self.schedule = list(schedule)
        self.t = 0.0

    def __call__(self, inputs, params):
        rate, channels = self.schedule.pop(0)
        n = int(CHUNK * rate)
        t = self.t + np.arange(n) / rate
        self.t += n / rate
        wave = (0.5 * np.sin(2 * math.pi * FREQ * t)).astype(np.float32)
        return PipelineOutput(audio=np.tile(wave, (channels, 1)), sample_rate=rate)


def test_rate_and_layout_change_mid_stream_is_continuous():
    schedule = [(24_000, 1)] * 10 + [(48_000, 2)] * 10 + [(16_000, 1)] * 10
    pipeline = Shifter(schedule)
    loop = asyncio.new_event_loop()
    try:
        buffer = MediaBuffer(loop, max_buffer=60.0)
        runner = PipelineRunner([pipeline], buffer)
        for _ in range(len(schedule)):
            assert runner.step()  # every call made a chunk
        assert runner.resampler_rebuilds == 2
        total = buffer.audio_buffered
        # every input second is there, less what the last filter still holds (< 30 ms)
        assert 3.0 * 48_000 - 0.03 * 48_000 <= total <= 3.0 * 48_000
        out = buffer.take_audio(total)
    finally:
        loop.close()
    assert buffer.counts.underruns == 0
    left = out[0]
    np.testing.assert_allclose(out[1], left, atol=1e-6)
    # No click at either switch (1.0 s and 2.0 s). A click is a discontinuity: a step of
    # the order of the amplitude. What a rebuild leaves is the old filter's tail and the new
    # one's start: a transient below -35 dB of the tone lasting about a millisecond, with
    # sample-to-sample steps close to what the clean sine has.
    ideal_step = 2 * 0.5 * math.sin(math.pi * FREQ / 48_000)
    steps = np.abs(np.diff(left[480:]))  # the first 10 ms: the filter starting from silence
    assert steps.max() <= ideal_step * 1.25
    t = np.arange(len(left)) / 48_000
    error = np.abs(left - 0.5 * np.sin(2 * math.pi * FREQ * t))[480:-480]
    assert 20 * np.log10(error.max() / 0.5) < -35
    calm = np.ones_like(error, bool)
    for switch in (48_000 - 480, 96_000 - 480):
        calm[switch - 96:switch + 96] = False
    assert error[calm].max() < 1e-4  # everywhere else the sine is exact to -74 dB


class SometimesSilent(Pipeline):
    """Claims audio (the registry's flag), but makes it only in some chunks: 24 fps video
    always, a 440 Hz tone only while ``with_audio`` says so."""

    pipeline_id = "sometimes-silent"
    name = "Sometimes silent"
    produces_video = True
    produces_audio = True
    fps = 24.0
    sample_rate = 48_000

    def __init__(self, schedule):
        super().__init__("cpu")
        self.schedule = list(schedule)

    def __call__(self, inputs, params):
        with_audio = self.schedule.pop(0) if self.schedule else False
        video = np.zeros((12, 8, 8, 3), np.uint8)
        audio = (0.3 * np.sin(2 * math.pi * FREQ * np.arange(24_000) / 48_000)).astype(np.float32)
        return PipelineOutput(video=video, audio=audio if with_audio else None, fps=24.0,
                              sample_rate=48_000)


def test_missing_audio_is_silence_not_a_stall():
    """A chain that produces audio only sometimes must not hold its video back forever."""
    loop = asyncio.new_event_loop()
    now = [0.0]
    try:
        buffer = MediaBuffer(loop, max_buffer=60.0, clock=lambda: now[0])
        chain = [SometimesSilent([True, True] + [False] * 6 + [True, True])]
        runner = PipelineRunner(chain, buffer)
        frames = []
        for chunk in range(10):  # 5 s of video; audio in the first and the last second
            assert runner.step()
            for k in range(25):  # play the chunk's 0.5 s out on a simulated clock
                now[0] = buffer.epoch + buffer.playout_delay + (chunk * 25 + k) * 0.02
                frames.append(buffer.take_audio(960))
        audio = np.concatenate(frames, axis=1)[0]
    finally:
        loop.close()
    assert buffer.counts.underruns == 0 and buffer.stall == 0  # video was never held back
    assert buffer.counts.absent_audio_samples == 3 * 48_000  # seconds 1-4 were silence by content
    loud = np.abs(audio.reshape(-1, 960)).max(axis=1) > 0.1
    assert loud[:50].all() and not loud[50:200].any() and loud[200:].all()
    # the tone is back on its own media time: sample 4 s is where the generator put it
    assert abs(audio[4 * 48_000 + 10]) > 0 and np.abs(audio[4 * 48_000 - 960:4 * 48_000]).max() == 0


def test_audio_without_an_audio_track_is_not_stored():
    """An offer without an audio m-line (e.g. Scope's hint said no audio): the chain's audio
    has no listener, so the buffer keeps none of it, however long the session runs."""
    loop = asyncio.new_event_loop()
    try:
        buffer = MediaBuffer(loop, max_buffer=6.0, audio_clocked=False, clock=lambda: 0.0)
        runner = PipelineRunner([SometimesSilent([True] * 100)], buffer)
        for _ in range(100):  # 50 s of video with audio
            assert runner.step()
            while buffer.pop_video() is not None:
                pass
    finally:
        loop.close()
    assert buffer.audio_buffered == 0
    assert buffer.audio_output_samples() == 0  # skipping media never moved the output
