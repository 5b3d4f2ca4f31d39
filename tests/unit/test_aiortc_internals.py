"""The aiortc/aioice internals that rtc/aiortc_internals.py relies on, checked against the
installed versions on real objects: an upgrade that moves one fails here, by name."""

from __future__ import annotations

import aioice.ice
import aiortc.codecs
from aiortc import RTCPeerConnection, RTCRtpCodecParameters
from aiortc.rtcrtpreceiver import TimestampMapper
from aiortc.rtp import RtcpSenderInfo, RtcpSrPacket

from scope_relay.rtc import aiortc_internals as internals
from scope_relay.rtc.ice import rtc_configuration
from scope_relay.rtc.opus import MusicOpusEncoder, configure_opus


async def offered_pair() -> tuple[RTCPeerConnection, RTCPeerConnection]:
    """A real offerer (sendrecv video, recvonly audio) and an answerer holding its offer."""
    offerer, answerer = RTCPeerConnection(rtc_configuration()), RTCPeerConnection(rtc_configuration())
    offerer.addTransceiver("video", direction="sendrecv")
    offerer.addTransceiver("audio", direction="recvonly")
    await offerer.setLocalDescription(await offerer.createOffer())
    await answerer.setRemoteDescription(offerer.localDescription)
    return offerer, answerer


def test_host_address_filter_replaces_aioice_function():
    assert callable(internals._original_host_addresses)
    assert aioice.ice.get_host_addresses is not internals._original_host_addresses  # ours


def test_opus_encoder_is_what_aiortc_builds():
    configure_opus(64_000)
    try:
        encoder = aiortc.codecs.get_encoder(
            RTCRtpCodecParameters(mimeType="audio/opus", clockRate=48000, channels=2))
        assert isinstance(encoder, MusicOpusEncoder)
        assert internals.opus_codec_parameters()["maxaveragebitrate"] == 64_000
    finally:
        configure_opus()


def test_sender_encoder_is_a_private_of_the_sender():
    from aiortc import RTCRtpSender
    assert "_RTCRtpSender__encoder" in RTCRtpSender.__init__.__code__.co_names


async def test_offered_direction_is_read_from_a_real_transceiver():
    offerer, answerer = await offered_pair()
    try:
        directions = {t.kind: internals.offered_direction(t) for t in answerer.getTransceivers()}
        assert directions == {"video": "sendrecv", "audio": "recvonly"}
        assert internals.offered_direction(offerer.getTransceivers()[0]) is None  # ours
    finally:
        await offerer.close()
        await answerer.close()


async def test_rtcp_tap_and_rtp_origin_on_a_real_receiver():
    offerer, answerer = await offered_pair()
    receiver = answerer.getTransceivers()[0].receiver
    seen = []
    try:
        internals.tap_rtcp(receiver, seen.append)
        report = RtcpSrPacket(ssrc=1234, sender_info=RtcpSenderInfo(
            ntp_timestamp=1 << 32, rtp_timestamp=90_000, packet_count=1, octet_count=100))
        await receiver._handle_rtcp_packet(report)  # what aiortc calls for each RTCP packet
        assert seen == [report]
        assert internals.rtp_origin(receiver) is None  # no RTP packet yet
        mapper = receiver._RTCRtpReceiver__timestamp_mapper
        assert isinstance(mapper, TimestampMapper)
        mapper.map(5000)  # what aiortc does with the first packet's timestamp
        assert internals.rtp_origin(receiver) == 5000
    finally:
        await offerer.close()
        await answerer.close()
