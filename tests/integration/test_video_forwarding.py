"""The relay forwards the cloud's encoded video (issue 27): the real cloud app and relay,
an aiortc receiver standing in for the page whose video receive path hands over the
encoded frames it gets (``ReceivePath.forward_video``), so they can be compared byte for
byte with what the relay received from the cloud, and decoded here to read the number
``hd-test`` draws into each frame."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import AsyncIterator
from typing import Any

import av
import httpx
import pytest

from scope_relay.local.cloud_link.peer import CloudWebRTCClient
from scope_relay.rtc import aiortc_internals as internals
from scope_relay.rtc.receive_path import EncodedVideo, ReceivePath, install_receive_path
from scope_relay.testing import frame_number

from helpers.peers import BrowserPeer
from helpers.waiting import wait_until

PARAMETERS = {"pipeline_ids": ["hd-test"], "height": 360, "frame_rate": 30}


class ForwardedReceiver(BrowserPeer):
    """The page's stand-in: its video arrives as encoded frames (nothing decoded by aiortc)."""

    def __init__(self) -> None:
        super().__init__(video=True, audio=False)
        video = next(t for t in self.pc.getTransceivers() if t.kind == "video")
        self.video_receiver = video.receiver
        self.path: ReceivePath = install_receive_path(video.receiver, "video")
        self.frames: list[tuple[float, EncodedVideo]] = []
        self.path.forward_video(lambda f: self.frames.append((time.monotonic(), f)),
                                lambda mime: True)

    def keyframes_after(self, when: float) -> list[float]:
        return [t for t, f in self.frames if t > when and f.keyframe]


@contextlib.asynccontextmanager
async def forwarded(relay_url: str, frames: int) -> AsyncIterator[ForwardedReceiver]:
    """A :class:`ForwardedReceiver` on ``hd-test`` that the relay answered, past its first
    ``frames`` encoded frames; closed afterwards."""
    peer = ForwardedReceiver()
    try:
        response = await peer.connect_relay(relay_url, PARAMETERS)
        assert response.status_code == 200, response.text
        await wait_until(lambda: len(peer.frames) >= frames, timeout=30)
        yield peer
    finally:
        await peer.close()


async def relay_stats(url: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        sessions = (await http.get("/api/v1/stats")).json()["sessions"]
    assert len(sessions) == 1
    return sessions[0]


@pytest.fixture
def cloud_frames(monkeypatch: pytest.MonkeyPatch) -> list[EncodedVideo]:
    """Every encoded frame the relay receives from the cloud, as it came."""
    seen: list[EncodedVideo] = []
    original = CloudWebRTCClient._on_encoded_video

    def record(self: CloudWebRTCClient, frame: EncodedVideo) -> None:
        seen.append(frame)
        original(self, frame)

    monkeypatch.setattr(CloudWebRTCClient, "_on_encoded_video", record)
    return seen


def decode_numbers(frames: list[EncodedVideo]) -> list[int | None]:
    codec = av.CodecContext.create("vp8", "r")
    numbers: list[int | None] = []
    for frame in frames:
        for picture in codec.decode(av.Packet(frame.data)):
            numbers.append(frame_number(picture.to_ndarray(format="rgb24")))
    return numbers


async def test_the_page_gets_the_clouds_bitstream_unchanged(stack, cloud_frames):
    cloud, relay = stack
    async with forwarded(relay.url, 60) as peer:
        stats = await relay_stats(relay.url)

    received = [f for _, f in peer.frames]
    assert received[0].keyframe  # a subscriber starts at a keyframe
    sent = {hashlib.sha1(f.data).digest(): i for i, f in enumerate(cloud_frames)}
    at = [sent.get(hashlib.sha1(f.data).digest()) for f in received]
    assert None not in at, "a frame the cloud never sent reached the page"
    assert at == sorted(at) and len(set(at)) == len(at)  # in order, none twice
    assert at[-1] - at[0] + 1 - len(at) <= 2  # hardly any skipped on loopback
    numbers = decode_numbers(received)
    assert None not in numbers and numbers == sorted(numbers), numbers
    assert stats["receive"]["video"]["forwarded_frames"] >= len(received)
    assert stats["receive"]["video"]["decoded_frames"] == 0  # nothing transcoded
    assert stats["video_forward"]["frames"] >= len(received)
    assert stats["video_forward"]["codec"].lower() == "video/vp8"
    # nothing needs pixels: the relay's decoder never ran
    assert stats["relay_decoder"]["starts"] == 0 and not stats["relay_decoder"]["running"]


async def test_a_keyframe_request_from_the_page_reaches_the_cloud(stack, cloud_frames):
    cloud, relay = stack
    async with forwarded(relay.url, 30) as peer:
        cloud_plis = (await relay_stats(cloud.url))["video_send"]["plis"]
        latencies = []
        for _ in range(3):
            asked = time.monotonic()
            await internals.send_pli(peer.video_receiver, peer.path.media_ssrc)
            await wait_until(lambda at=asked: peer.keyframes_after(at), timeout=5)
            latencies.append(peer.keyframes_after(asked)[0] - asked)
            await asyncio.sleep(0.5)  # (spacing between requests, not synchronisation)
        cloud_stats = await relay_stats(cloud.url)
        stats = await relay_stats(relay.url)
    # each PLI went upstream (none coalesced: a keyframe answered the one before), unless
    # a keyframe was already queued at the relay (then that one answers it)
    queued = stats["keyframe_requests_queued"]
    assert cloud_stats["video_send"]["plis"] >= cloud_plis + 3 - queued
    upstream = stats["keyframes_upstream"]
    assert upstream["requested"].get("page", 0) + queued >= 3 and upstream["sent"] >= 3 - queued
    # each keyframe the cloud forced went out as one its receiver waits for: ahead of the
    # pacer's schedule (issue 27's latency), unless the path showed loss or an overuse
    send = cloud_stats["video_send"]
    assert send["pacer_keyframe_bursts"] + send["requested_keyframes_paced"] >= 3 - queued
    if send["nacks"] == 0 and send["delay_overuses"] == 0:  # a calm path: none paced
        assert send["requested_keyframes_paced"] == 0, send
    # a periodic keyframe (every 3 s) could answer one by chance, not all three
    assert sorted(latencies)[1] < 0.3, latencies


async def test_a_nack_on_the_local_hop_is_answered_by_the_relay(stack):
    cloud, relay = stack
    async with forwarded(relay.url, 30) as peer:
        buffer = peer.path.buffer
        assert buffer.next_seq is not None
        got = [(buffer.next_seq - i) % 65536 for i in range(5, 0, -1)]  # received already
        before = buffer.late  # (a packet behind the released ones counts as late)
        await internals.send_nack(peer.video_receiver, peer.path.media_ssrc, got)
        await wait_until(lambda: buffer.late >= before + 5, timeout=5)
        stats = await relay_stats(relay.url)
        cloud_stats = await relay_stats(cloud.url)
    assert stats["video_send"]["nacked_packets"] >= 5  # asked of the relay's sender
    assert cloud_stats["video_send"]["nacks"] == 0  # and never of the cloud


async def test_a_viewer_that_negotiated_another_codec_gets_the_picture_encoded_for_it(stack):
    from aiortc import RTCRtpSender, RTCSessionDescription

    cloud, relay = stack
    owner = ForwardedReceiver()
    viewer = BrowserPeer(video=True, audio=False)
    try:
        response = await owner.connect_relay(relay.url, PARAMETERS)
        assert response.status_code == 200, response.text
        token = response.json()["shareToken"]
        video = next(t for t in viewer.pc.getTransceivers() if t.kind == "video")
        video.setCodecPreferences([c for c in RTCRtpSender.getCapabilities("video").codecs
                                   if c.mimeType.lower() == "video/h264"])
        await viewer.pc.setLocalDescription(await viewer.pc.createOffer())
        async with httpx.AsyncClient(base_url=relay.url, timeout=30) as http:
            answer = await http.post("/api/v1/webrtc/viewer", json={
                "sdp": viewer.pc.localDescription.sdp, "type": "offer", "shareToken": token})
        assert answer.status_code == 200, answer.text
        assert "H264/90000" in answer.json()["sdp"]
        await viewer.pc.setRemoteDescription(RTCSessionDescription(answer.json()["sdp"], "answer"))
        await viewer.wait_video_frames(15, timeout=30)
        stats = await relay_stats(relay.url)
    finally:
        await viewer.close()
        await owner.close()
    assert stats["relay_decoder"]["running"] and stats["relay_decoder"]["frames"] >= 15
    assert stats["receive"]["video"]["decoded_frames"] == 0  # the owner's still forwarded
    assert len(owner.frames) >= 15


async def test_a_recording_runs_the_decoder_only_while_it_lasts(stack):
    cloud, relay = stack
    async with forwarded(relay.url, 10) as peer:
        async with httpx.AsyncClient(base_url=relay.url, timeout=30) as http:
            started = await http.post("/api/v1/recordings", json={"sessionId": peer.session_id})
            assert started.status_code in (200, 201), started.text
            recording = started.json()["recordingId"]

            async def decoded() -> int:
                return int((await relay_stats(relay.url))["relay_decoder"]["frames"])

            frames: list[int] = [0]

            async def poll() -> None:
                while frames[0] < 15:
                    frames[0] = await decoded()
                    await asyncio.sleep(0.1)
            await asyncio.wait_for(poll(), 30)
            stopped = await http.delete(f"/api/v1/recordings/{recording}")
            assert stopped.status_code == 200, stopped.text
            assert stopped.json()["duration"] > 0
            count = len(peer.frames)
            await wait_until(lambda: len(peer.frames) >= count + 10, timeout=30)
            stats = await relay_stats(relay.url)
    decoder = stats["relay_decoder"]
    assert decoder["starts"] == 1 and not decoder["running"] and decoder["consumers"] == 0
    assert decoder["errors"] == 0
    assert stats["receive"]["video"]["decoded_frames"] == 0  # the page's still forwarded
