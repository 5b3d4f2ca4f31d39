"""PyAV frame <-> (channels, samples) conversion, and the relay's exact s16 path."""

from __future__ import annotations

import asyncio

import av
import numpy as np
import pytest

from scope_relay.local.cloud_link.peer import CloudWebRTCClient
from scope_relay.local.playout.frame_processor import FrameProcessor
from scope_relay.media.audio import (
    array_to_frame,
    as_channels_first,
    downmix_matrix,
    float_to_s16,
    frame_to_array,
    frame_to_s16,
    interleave,
    s16_frame,
    to_stereo,
)
from scope_relay.media.resample import AudioFramer
from scope_relay.protocol.capabilities import Capabilities
from scope_relay.protocol.errors import InvalidAudio
from scope_relay.protocol.media import OPUS_LOOKAHEAD_SECONDS


def ramps(channels: int, n: int = 960) -> np.ndarray:
    """Distinct ramps per channel: left rises, right falls, any third goes in steps of 3."""
    base = np.arange(n, dtype=np.int32)
    rows = [base * 7 - 3000, 3000 - base * 5, base * 3][:channels]
    return np.stack(rows).astype(np.int16)


def make_frame(samples: np.ndarray, fmt: str) -> av.AudioFrame:
    layout = {1: "mono", 2: "stereo"}[samples.shape[0]]
    data = samples if fmt.endswith("p") else samples.T.reshape(1, -1)
    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(data), format=fmt, layout=layout)
    frame.sample_rate = 48000
    return frame


@pytest.mark.parametrize("fmt", ["s16", "s16p"])
@pytest.mark.parametrize("channels", [1, 2])
def test_s16_deinterleave_keeps_ramps_exact(fmt, channels):
    samples = ramps(channels)
    frame = make_frame(samples, fmt)
    np.testing.assert_array_equal(frame_to_s16(frame), samples)
    as_float = frame_to_array(frame)
    assert as_float.shape == (channels, 960) and as_float.dtype == np.float32
    back, clipped = float_to_s16(as_float)
    np.testing.assert_array_equal(back, samples)
    assert clipped == 0


def test_packed_s16_from_aiortc_shape_is_deinterleaved_not_reshaped():
    samples = ramps(2)
    frame = make_frame(samples, "s16")
    assert frame.to_ndarray().shape == (1, 1920)  # what aiortc's decoder hands us
    left, right = frame_to_s16(frame)
    np.testing.assert_array_equal(left, samples[0])
    np.testing.assert_array_equal(right, samples[1])


def test_relay_path_is_bit_exact_for_48k_s16():
    """Packed s16 in -> FrameProcessor -> 20 ms s16 frames out, identical samples."""
    rng = np.random.default_rng(1)
    source = rng.integers(-32768, 32767, size=(2, 960 * 50), dtype=np.int16)
    processor = FrameProcessor(clock=lambda: 1000.1)  # playback starts before the audio
    for k in range(50):
        frame = make_frame(source[:, k * 960:(k + 1) * 960], "s16")
        processor.add_audio(frame_to_s16(frame), cloud_time=1000.0 + k * 0.02,
                            arrival=1000.1 + k * 0.02)
    start = asyncio.run(processor.first_audio())
    assert start == round(1000.0 * 48000)
    out = np.concatenate([processor.take_audio(960) for _ in range(50)], axis=1)
    np.testing.assert_array_equal(out, source)
    assert processor.counts.audio_underruns == 0


def test_s16_frame_round_trip_and_pts():
    samples = ramps(2)
    frame = s16_frame(samples, pts=4800)
    assert frame.format.name == "s16" and frame.layout.name == "stereo"
    assert frame.sample_rate == 48000 and frame.pts == 4800 and frame.samples == 960
    np.testing.assert_array_equal(frame_to_s16(frame), samples)


def test_float_to_s16_guards_nan_clips_and_rounds():
    x = np.array([[np.nan, np.inf, -np.inf, 1.5, -1.5, 0.25 / 32768, 0.75 / 32768, -0.75 / 32768]],
                 dtype=np.float32)
    out, clipped = float_to_s16(x)
    np.testing.assert_array_equal(out[0], [0, 0, 0, 32767, -32768, 0, 1, -1])
    assert clipped == 2


def test_pipeline_audio_shapes_and_dtypes():
    assert as_channels_first(np.zeros(100, np.float32)).shape == (1, 100)
    assert as_channels_first(np.zeros((2, 100))).dtype == np.float32
    ints = as_channels_first(np.array([[16384, -32768]], np.int16))
    np.testing.assert_array_equal(ints, [[0.5, -1.0]])  # integers are scaled, not taken as float
    with pytest.raises(InvalidAudio, match="samples, channels"):
        as_channels_first(np.zeros((1000, 2), np.float32))
    with pytest.raises(InvalidAudio):
        as_channels_first(np.zeros((2, 2, 2)))
    with pytest.raises(InvalidAudio):
        as_channels_first(np.array(["a", "b"]))


def test_stereo_from_mono_and_surround():
    mono = np.linspace(-0.5, 0.5, 10, dtype=np.float32)[None]
    np.testing.assert_array_equal(to_stereo(mono), np.repeat(mono, 2, axis=0))
    surround = np.ones((6, 10), np.float32)
    stereo = to_stereo(surround)
    assert stereo.shape == (2, 10) and np.abs(stereo).max() <= 1.0 + 1e-6


def test_relay_resamples_other_rates_continuously():
    """Audio that is not 48 kHz s16 (another decoder, another format) goes through one
    streaming resampler on the relay and comes out as a clean, gap-free 48 kHz tone."""

    processor = FrameProcessor(clock=lambda: 0.0)
    client = CloudWebRTCClient(None, processor, Capabilities(False, True, False))
    rate, n = 24_000, 480
    t = np.arange(rate * 2) / rate
    tone = (0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    for k in range(len(tone) // n):
        frame = array_to_frame(np.stack([tone[k * n:(k + 1) * n]] * 2), "fltp", rate)
        client.deliver("audio", frame, cloud_time=50.0 + k * 0.02, arrival=50.05 + k * 0.02)
    asyncio.run(processor.first_audio())
    out = np.concatenate([processor.take_audio(960) for _ in range(90)], axis=1)[0] / 32768
    assert processor.counts.audio_gap_samples == 0 and processor.counts.audio_overlap_samples == 0
    y = out[960:]
    s = np.arange(len(y)) / 48_000
    basis = np.stack([np.sin(2 * np.pi * 1000 * s), np.cos(2 * np.pi * 1000 * s)], 1)
    coef, *_ = np.linalg.lstsq(basis, y, rcond=None)
    residual = y - basis @ coef
    assert 10 * np.log10(np.sum((basis @ coef) ** 2) / np.sum(residual ** 2)) > 85  # s16-limited


def test_downmix_uses_standard_coefficients_by_channel_name():
    names = ("FL", "FR", "FC", "LFE", "BL", "BR")  # 5.1
    m = downmix_matrix(names)
    c = np.sqrt(0.5)
    norm = 1 + c + c  # rows normalised so full scale everywhere cannot clip
    np.testing.assert_allclose(m[0], np.array([1, 0, c, 0, c, 0]) / norm, rtol=1e-6)
    np.testing.assert_allclose(m[1], np.array([0, 1, c, 0, 0, c]) / norm, rtol=1e-6)
    # a 5.1 frame's own layout is used: a signal only on the centre reaches both sides
    x = np.zeros((6, 100), np.float32)
    x[2] = 0.5
    frame = array_to_frame(x, "fltp")
    assert frame.layout.name == "5.1"
    framer = AudioFramer()
    framer.push_frame(frame)
    out = framer.ring.read(len(framer.ring))
    np.testing.assert_allclose(out[0], out[1])
    np.testing.assert_allclose(out[0], 0.5 * c / norm, rtol=1e-5)


def _steady_processor():
    """A processor on a fake clock with 1 s of on-time audio played: (processor, frame, now)."""
    now = [1000.0]
    processor = FrameProcessor(clock=lambda: now[0])
    samples = np.ones((2, 960), np.int16)
    t = [1000.0]

    def frame(lag: float) -> None:
        processor.add_audio(samples, cloud_time=t[0], arrival=t[0] + lag)
        t[0] += 0.02

    frame(0.05)  # sets the offset: 50 ms
    asyncio.run(processor.first_audio())
    for _ in range(50):  # on time, consumed as they are due
        now[0] = t[0] + 0.2
        frame(0.05)
        processor.take_audio(960)
    return processor, frame, now, t


def _late_episode(processor, frame, now, t, lateness: float) -> None:
    """The next slot plays as silence, then its frame comes ``lateness`` after that read."""
    processor.take_audio(960)  # the last buffered frame plays
    now[0] += 0.02
    processor.take_audio(960)  # the next slot plays as silence before its frame arrives
    frame(now[0] + lateness - t[0])


def _calm(processor, frame, now, t, seconds: float) -> None:
    for _ in range(int(seconds * 50)):
        now[0] = t[0] + 0.05 + 0.15 + processor.extra_delay
        frame(0.05)
        processor.take_audio(960)


def test_a_lone_catch_up_burst_raises_no_delay():
    """After a stall everything held back arrives late at once: one episode, forgiven."""
    processor, frame, now, t = _steady_processor()
    _late_episode(processor, frame, now, t, 0.1)
    _calm(processor, frame, now, t, 1.0)
    assert processor.extra_delay == 0.0
    assert processor.lateness.episodes == 1 and processor.lateness.forgiven == 1
    assert processor.counts.audio_late_samples > 0  # the late audio itself is still dropped


def test_repeated_lateness_raises_by_bounded_steps_and_calm_gives_it_back():
    """A second late episode within 10 s is jitter: the delay rises by at most 80 ms per
    raise; 10 s of calm give it all back, in steps, without touching the audio."""
    processor, frame, now, t = _steady_processor()
    _late_episode(processor, frame, now, t, 0.15)
    _calm(processor, frame, now, t, 1.0)
    _late_episode(processor, frame, now, t, 0.15)  # again: now it raises, bounded
    raised = processor.extra_delay
    assert 0.05 <= raised <= 0.08 + 1e-9
    assert processor.lateness.raises == 1
    _calm(processor, frame, now, t, 10.0)
    assert processor.extra_delay == 0.0  # back to the baseline
    assert processor.counts.delay_decreases >= 2  # in steps, not one jump


def test_lateness_is_judged_at_the_read_not_the_release():
    """The output reads a slot before its release (Opus lookahead, 20 ms steps): a frame
    that misses the read by 30 ms is 30 ms late even if it beat its release time."""
    processor, frame, now, t = _steady_processor()
    processor.take_audio(960)
    now[0] += 0.02
    read_at = now[0]
    processor.take_audio(960)  # read before the frame below exists
    index = round(t[0] * 48_000)
    assert processor._read_time(index) == read_at
    before = processor.counts.audio_late_samples
    frame(read_at + 0.03 - t[0])
    assert processor.counts.audio_late_samples > before


def test_lateness_that_lasts_raises_by_bounded_steps_until_frames_are_in_time():
    """A path that got slower: frames keep coming late, so the delay rises by a bounded
    step once they have been late for 0.1 s, and again only if frames read after that
    raise are late too (frames read before it say nothing about whether it was enough)."""
    from scope_relay.local.playout.lateness import LatenessPolicy

    policy = LatenessPolicy()
    # 1 s of frames each 0.2 s after its read, all read before the first raise
    steps = [policy.late(10.0 + k * 0.02, read_at=9.8 + k * 0.02 if k < 10 else 10.0)
             for k in range(50)]
    raised = [s for s in steps if s]
    assert raised == [0.08]  # the later ones were read before it: no second raise
    policy = LatenessPolicy()
    steps = [policy.late(10.0 + k * 0.02, read_at=10.0 + k * 0.02 - 0.2) for k in range(50)]
    assert [s for s in steps if s] == [0.08] * 5  # still late after each raise: again
    policy.on_time(11.0)
    assert policy.forgiven == 0 and policy.episodes == 1
    small = LatenessPolicy()
    small.late(20.0, 19.995)
    assert small.late(20.12, 20.115) == 0.02  # 5 ms late: the minimum step


def test_loss_room_rises_at_once_for_retransmissions_and_falls_back_after():
    """While loss persists the receive path asks for the hold a retransmission needs:
    the delay rises by what the budget lacks, at once, for both tracks; when the loss has
    stopped (0 asked) it is given back gradually, not in one jump."""
    from scope_relay.local.playout.frame_processor import MAX_LOSS_ROOM, ROOM_DECAY

    processor, frame, now, t = _steady_processor()
    budget = processor.hold_budget()
    assert budget is not None and 0.05 < budget < 0.07  # 70 ms delay, less lookahead
    released = processor.release_time(t[0])
    processor.want_hold(budget + 0.1)  # 100 ms more than there is
    assert processor.loss_room == pytest.approx(0.1, abs=0.002)
    assert processor.release_time(t[0]) == pytest.approx(released + processor.loss_room)
    assert processor.hold_budget() == pytest.approx(budget + processor.loss_room, abs=0.002)
    assert processor.stats()["loss_room_ms"] == pytest.approx(100, abs=2)
    processor.want_hold(budget + 0.1)  # asked again: no second raise (no ratchet)
    assert processor.counts.loss_room_raises == 1
    processor.want_hold(10.0)
    assert processor.loss_room == MAX_LOSS_ROOM  # bounded
    now[0] += 1.0
    processor.want_hold(0.0)  # the loss has stopped
    assert processor.loss_room == pytest.approx(MAX_LOSS_ROOM - ROOM_DECAY)
    for _ in range(20):
        now[0] += 1.0
        processor.want_hold(0.0)
    assert processor.loss_room == 0.0


def test_queue_room_saves_audio_a_hop_queue_delays_and_falls_back_after():
    """A ceiling's queue on the cloud hop delays audio with the video: told the queue the
    video's estimate measures, the playout waits for it at once (so the audio in it plays),
    bounded, and once the queue drains it gives the room back gradually, to the clean
    delay (no creep). Without the room the same audio is lost late."""
    from scope_relay.local.playout.frame_processor import MAX_QUEUE_ROOM, QUEUE_ROOM_DECAY

    def lost_late(told: bool) -> int:
        """Audio through a queue growing 5 ms per frame to 125 ms, read as it falls due."""
        processor, frame, now, t = _steady_processor()
        assert processor.audio_cursor is not None
        for k in range(40):
            queue = min(0.125, 0.005 * (k + 1))
            now[0] = arrival = t[0] + 0.05 + queue
            if told:  # the video's packets just before it met the same queue
                processor.queue_seen(queue)
            while processor.release_time(processor.audio_cursor / 48_000) \
                    - OPUS_LOOKAHEAD_SECONDS <= arrival:
                processor.take_audio(960)
            frame(arrival - t[0])
        return processor.counts.audio_late_samples

    lost_without, lost_with = lost_late(told=False), lost_late(told=True)
    assert lost_without > 0 and lost_with == 0

    processor, frame, now, t = _steady_processor()
    clean = processor.release_time(t[0]) - t[0]
    processor.queue_seen(0.12)
    raised = processor.queue_room
    # the 120 ms queue + 20 ms margin, less the clean slack (70 ms delay - Opus lookahead)
    assert raised == pytest.approx(0.12 + 0.02 - (0.07 - OPUS_LOOKAHEAD_SECONDS), abs=0.002)
    assert processor.release_time(t[0]) - t[0] == pytest.approx(clean + raised)
    assert processor.stats()["queue_room_ms"] == pytest.approx(raised * 1000, abs=0.1)
    processor.queue_seen(0.12)  # told again: no ratchet
    assert processor.counts.queue_room_raises == 1
    processor.queue_seen(5.0)
    assert processor.queue_room == MAX_QUEUE_ROOM  # bounded
    now[0] += 1.0
    processor.queue_seen(0.0)  # drained
    assert processor.queue_room == pytest.approx(MAX_QUEUE_ROOM - QUEUE_ROOM_DECAY)
    for _ in range(10):
        now[0] += 0.5
        processor.queue_seen(0.0)
    assert processor.queue_room == 0.0
    assert processor.release_time(t[0]) - t[0] == pytest.approx(clean)  # the clean figure


def test_a_queue_the_slack_covers_needs_no_room():
    """A small queue (within the playout delay's slack) or none moves nothing."""
    processor, _, _, _ = _steady_processor()
    processor.queue_seen(0.01)
    processor.queue_seen(0.025)
    assert processor.queue_room == 0.0 and processor.counts.queue_room_raises == 0


def test_s16_frame_matches_from_ndarray():
    """Written into the frame's plane: the same frame PyAV builds, for mono, stereo and a
    non-contiguous input."""
    for samples in (ramps(1), ramps(2), ramps(2)[:, ::2], np.ascontiguousarray(ramps(2).T).T):
        frame = s16_frame(samples, pts=96)
        layout = "mono" if samples.shape[0] == 1 else "stereo"
        ref = av.AudioFrame.from_ndarray(interleave(samples), format="s16", layout=layout)
        assert frame.samples == ref.samples and frame.layout.name == layout
        assert bytes(frame.planes[0])[:samples.size * 2] == bytes(ref.planes[0])[:samples.size * 2]
        np.testing.assert_array_equal(frame_to_s16(frame), samples)
