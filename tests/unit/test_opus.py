"""Opus tuned for music took effect: in the encoder, in its output, and in the SDP."""

from __future__ import annotations

import numpy as np
from aiortc.codecs import CODECS, get_encoder

from scope_relay.local.server import RELAY_KEY
from scope_relay.media.audio import s16_frame
from scope_relay.rtc.opus import MusicOpusEncoder, configure_opus

from helpers.peers import connected
from helpers.servers import cloud_server, relay_server


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


async def test_sdp_and_live_sender_carry_the_settings():
    async with cloud_server() as cloud, relay_server(cloud) as relay:
        async with connected(relay.url, {"pipeline_ids": ["test-tone"]}, video=False) as peer:
            fmtp = [line for line in peer.answer_sdp.splitlines() if line.startswith("a=fmtp:")]
            assert any("stereo=1" in f and "maxaveragebitrate=128000" in f for f in fmtp), fmtp
            await peer.wait_audio_frames(20)
            (session,) = relay.app[RELAY_KEY].sessions.values()
            sender = next(s for s in session.pc.getSenders() if s.track and s.track.kind == "audio")
            encoder = sender._RTCRtpSender__encoder
            assert isinstance(encoder, MusicOpusEncoder) and encoder.codec.bit_rate == 128_000
