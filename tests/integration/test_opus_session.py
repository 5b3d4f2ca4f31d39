"""Opus tuned for music took effect in a live session: in the SDP and in the relay's sender
(the encoder alone: tests/unit/test_opus.py)."""

from __future__ import annotations

from scope_relay.local.server import RELAY_KEY
from scope_relay.rtc.aiortc_internals import sender_encoder
from scope_relay.rtc.opus import MusicOpusEncoder

from helpers.peers import connected


async def test_sdp_and_live_sender_carry_the_settings(stack):
    _, relay = stack
    async with connected(relay.url, {"pipeline_ids": ["test-tone"]}, video=False) as peer:
        fmtp = [line for line in peer.answer_sdp.splitlines() if line.startswith("a=fmtp:")]
        assert any("stereo=1" in f and "maxaveragebitrate=128000" in f for f in fmtp), fmtp
        await peer.wait_audio_frames(20)
        (session,) = relay.app[RELAY_KEY].sessions.values()
        sender = next(s for s in session.pc.getSenders() if s.track and s.track.kind == "audio")
        encoder = sender_encoder(sender)
        assert isinstance(encoder, MusicOpusEncoder) and encoder.codec.bit_rate == 128_000
