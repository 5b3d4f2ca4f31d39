"""Which video codec each hop uses (rtc/video_codecs.py), on real aiortc offers and
answers: the cloud's preference first, the other codec when an offer lacks it, the page hop
following the cloud's negotiated codec where the browser offered it."""

from __future__ import annotations

import re

import pytest
from aiortc import RTCPeerConnection, RTCRtpSender, RTCSessionDescription, VideoStreamTrack

from scope_relay.rtc.ice import rtc_configuration
from scope_relay.rtc.video_codecs import (
    answer_with,
    choose_page_codec,
    page_video_codec,
    parse_video_codec,
    video_codec,
)


def first_video_codec(sdp: str) -> str:
    """The encoding name of the first payload type on the SDP's video m-line."""
    media = sdp.split("m=video ", 1)[1]
    first = media.split("\r\n", 1)[0].split()[2]
    return re.search(rf"a=rtpmap:{first} ([^/]+)/", media).group(1)  # type: ignore[union-attr]


async def negotiate(offer_codecs: list[str] | None, prefer: str) -> tuple[str, str | None, str]:
    """An offerer receiving video (only ``offer_codecs`` if given), an answerer sending it
    with ``answer_with(prefer)``: (the codec in use, the offerer's view, the answer SDP)."""
    offerer, answerer = RTCPeerConnection(rtc_configuration()), RTCPeerConnection(rtc_configuration())
    try:
        transceiver = offerer.addTransceiver("video", direction="recvonly")
        if offer_codecs is not None:
            transceiver.setCodecPreferences([
                c for c in RTCRtpSender.getCapabilities("video").codecs
                if c.mimeType.split("/")[1] in offer_codecs])
        offer = await offerer.createOffer()
        await answerer.setRemoteDescription(offer)
        answerer.getTransceivers()[0].sender.replaceTrack(VideoStreamTrack())
        answerer.getTransceivers()[0].direction = "sendonly"
        chosen = answer_with(answerer, prefer)
        answer = await answerer.createAnswer()
        await offerer.setLocalDescription(offer)
        await offerer.setRemoteDescription(RTCSessionDescription(answer.sdp, "answer"))
        return str(chosen), video_codec(offerer), answer.sdp
    finally:
        await offerer.close()
        await answerer.close()


def test_parse_video_codec():
    assert parse_video_codec(" H264 ") == "h264" and parse_video_codec("vp8") == "vp8"
    with pytest.raises(ValueError, match="unknown video codec 'av1': choose one of h264, vp8"):
        parse_video_codec("av1")


@pytest.mark.parametrize("prefer,expected", [("h264", "H264"), ("vp8", "VP8")])
async def test_the_answer_puts_the_preferred_codec_first(prefer, expected):
    chosen, offerer_sees, sdp = await negotiate(None, prefer)  # aiortc offers VP8 first
    assert chosen == offerer_sees == prefer
    assert first_video_codec(sdp) == expected
    assert "VP8/90000" in sdp and "H264/90000" in sdp  # the other one still listed
    if prefer == "h264":
        assert "packetization-mode=1" in sdp and "profile-level-id=42" in sdp


async def test_an_offer_without_the_preferred_codec_gets_the_other():
    chosen, offerer_sees, sdp = await negotiate(["VP8"], "h264")
    assert chosen == offerer_sees == "vp8" and "H264" not in sdp
    chosen, offerer_sees, sdp = await negotiate(["H264"], "vp8")
    assert chosen == offerer_sees == "h264" and first_video_codec(sdp) == "H264"


def test_page_video_codec_follows_the_cloud_where_the_browser_can():
    assert page_video_codec("h264", ["vp8", "h264"]) == "h264"
    assert page_video_codec("vp8", ["h264", "vp8"]) == "vp8"
    assert page_video_codec("h264", ["vp8"]) is None  # the relay encodes VP8 for it
    assert page_video_codec(None, ["vp8", "h264"]) is None


async def test_choose_page_codec_on_real_peers():
    """A cloud hop negotiated to H.264; a page offering VP8 first then H.264 gets H.264,
    a page offering only VP8 gets VP8 (the relay's own encode)."""
    cloud_offerer, cloud = RTCPeerConnection(rtc_configuration()), RTCPeerConnection(rtc_configuration())
    pages: list[RTCPeerConnection] = []
    try:
        cloud_offerer.addTransceiver("video", direction="recvonly")
        offer = await cloud_offerer.createOffer()
        await cloud.setRemoteDescription(offer)
        cloud.getTransceivers()[0].direction = "sendonly"
        answer_with(cloud, "h264")
        await cloud_offerer.setLocalDescription(offer)
        await cloud_offerer.setRemoteDescription(await cloud.createAnswer())
        for offered, expected in ((None, "h264"), (["VP8"], "vp8")):
            browser, relay = RTCPeerConnection(rtc_configuration()), RTCPeerConnection(rtc_configuration())
            pages += [browser, relay]
            transceiver = browser.addTransceiver("video", direction="recvonly")
            if offered:
                transceiver.setCodecPreferences([
                    c for c in RTCRtpSender.getCapabilities("video").codecs
                    if c.mimeType.split("/")[1] in offered])
            await relay.setRemoteDescription(await browser.createOffer())
            relay.getTransceivers()[0].direction = "sendonly"
            assert choose_page_codec(relay, cloud_offerer) == expected
            assert first_video_codec((await relay.createAnswer()).sdp) == expected.upper()
    finally:
        for pc in (cloud_offerer, cloud, *pages):
            await pc.close()
