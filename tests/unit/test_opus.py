"""Opus tuned for music took effect in the encoder and its output (in the SDP and a live
sender: tests/integration/test_opus_session.py)."""

from __future__ import annotations

import numpy as np
import pytest
from aiortc.codecs import CODECS, get_encoder

from scope_relay.media.audio import s16_frame
from scope_relay.rtc.opus import MusicOpusEncoder, configure_opus


def opus_codec():
    return next(c for c in CODECS["audio"] if c.mimeType == "audio/opus")


def mean_packet_bytes(encoder, seconds: float = 2.0) -> float:
    rng = np.random.default_rng(3)
    sizes = []
    for k in range(int(seconds * 50)):
        music = rng.normal(0, 0.2, (2, 960)) + np.sin(np.arange(960) * 0.05 * (k % 7 + 1))
        samples = np.clip(music * 8000, -32768, 32767).astype(np.int16)
        payloads, _ = encoder.encode(s16_frame(samples, k * 960))
        sizes += [len(p) for p in payloads]
    return float(np.mean(sizes))


def test_encoder_uses_music_settings_and_bitrate():
    configure_opus(128_000)
    encoder = get_encoder(opus_codec())
    assert isinstance(encoder, MusicOpusEncoder)
    assert encoder.codec.bit_rate == 128_000
    assert encoder.codec.options["application"] == "audio"
    size_128 = mean_packet_bytes(encoder)
    configure_opus(64_000)
    size_64 = mean_packet_bytes(get_encoder(opus_codec()))
    configure_opus(128_000)
    assert 280 <= size_128 <= 360  # 128 kbit/s * 20 ms = 320 bytes
    assert size_64 < 0.6 * size_128


def test_loss_estimate_counts_nacks_and_keeps_fec_on_after_any_loss():
    """Reports that say 0 (retransmissions count as received) do not hide NACKed loss,
    and after any loss libopus is told at least the floor that makes it carry FEC."""
    from scope_relay.rtc.opus import FEC_FLOOR, FEC_HOLD, NACK_WINDOW, LossEstimate

    now = [0.0]
    estimate = LossEstimate(clock=lambda: now[0])
    estimate.on_report(0)
    assert estimate.expected() == 0
    estimate.on_nack([100, 101])
    estimate.on_nack([101])  # asked again: the same loss
    assert estimate.nack_percent() == pytest.approx(2 / (NACK_WINDOW * 50) * 100)
    assert estimate.expected() == FEC_FLOOR
    estimate.on_nack(list(range(200, 230)))  # 32 of 250 packets in the window: 12.8 %

    assert estimate.expected() > FEC_FLOOR
    now[0] += NACK_WINDOW + 1
    assert estimate.expected() == FEC_FLOOR  # the window emptied, the floor holds
    now[0] += FEC_HOLD
    estimate.on_report(0)
    assert estimate.expected() == 0  # no loss for FEC_HOLD s: FEC off, full quality
    estimate.on_report(26)  # a report of ~10 % loss
    assert estimate.expected() >= FEC_FLOOR


class CountingResampler:
    """Wraps an encoder's resampler to count the frames that go through it."""

    def __init__(self, resampler):
        self.resampler = resampler
        self.frames = 0

    def resample(self, frame):
        self.frames += 1
        return self.resampler.resample(frame)


def music_frame(k: int, samples: int = 960, pts: int | None = 0):
    rng = np.random.default_rng(k)
    music = rng.normal(0, 0.2, (2, samples)) + np.sin(np.arange(samples) * 0.03 * (k % 5 + 1))
    return s16_frame(np.clip(music * 8000, -32768, 32767).astype(np.int16), pts)


def test_fast_path_gives_the_resamplers_payloads_and_rtp_times():
    """A 20 ms s16 stereo 48 kHz frame skips the resampler with bit-identical packets and
    RTP times; a frame without pts or of another size goes through it, and so does every
    frame after it (the resampler may hold samples back)."""
    configure_opus(128_000)
    fast, reference = MusicOpusEncoder(), MusicOpusEncoder()
    if fast._opus is None:
        pytest.skip("libopus cannot be loaded here: PyAV encodes, no fast path")
    fast.resampler = counting = CountingResampler(fast.resampler)
    reference._resampled = True  # always through the resampler, as before the fast path

    frames = [music_frame(k, pts=5000 + k * 960) for k in range(40)]
    frames.append(music_frame(40, pts=5000 + 40 * 960 + 4800))  # a jump: RTP time follows
    times = []
    for frame in frames:
        out = fast.encode(frame)
        assert out == reference.encode(frame)
        times.append(out[1])
    assert counting.frames == 0
    assert times == [k * 960 for k in range(40)] + [40 * 960 + 4800]

    tail = [music_frame(50, pts=None), music_frame(51, 700, 5000 + 44 * 960),
            music_frame(52, 1500, 5000 + 44 * 960 + 700)]
    tail += [music_frame(53 + k, pts=5000 + 44 * 960 + 2200 + k * 960) for k in range(5)]
    for frame in tail:
        assert fast.encode(frame) == reference.encode(frame)
    assert counting.frames == len(tail)
