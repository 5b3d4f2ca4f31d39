"""Opus tuned for music took effect in the encoder and its output (in the SDP and a live
sender: tests/integration/test_opus_session.py)."""

from __future__ import annotations

import numpy as np
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
