"""The relay forwards the page's camera to the cloud still encoded (issue 27): the real
cloud app and relay, an aiortc peer standing in for the page whose camera track encodes
its numbered frames itself (PyAV's libvpx) and hands aiortc the packets, so the bytes it
sent are known exactly and can be compared with what the cloud's receive path gets."""

from __future__ import annotations

import fractions
import hashlib
import time
from typing import Any

import av
import httpx
import pytest
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from aiortc.rtp import RtcpPsfbPacket

from scope_relay.local.sessions import browser_session
from scope_relay.rtc import aiortc_internals as internals
from scope_relay.rtc.ice import rtc_configuration
from scope_relay.rtc.jitter import VideoFrameData
from scope_relay.rtc.receive_path import ReceivePath
from scope_relay.testing import NumberedCamera

from helpers.peers import BrowserPeer
from helpers.servers import cloud_server, relay_server
from helpers.waiting import wait_until

PARAMETERS = {"pipeline_ids": ["passthrough"]}
FPS = 30


class EncodingCamera(MediaStreamTrack):
    """A numbered camera that encodes its own VP8 (libvpx, keyframes only when asked, or
    on a PLI its sender receives) and sends the packets: :attr:`sent` is every frame's
    bytes as it was encoded."""

    kind = "video"

    def __init__(self, codec: str = "vp8") -> None:
        super().__init__()
        self.camera = NumberedCamera(fps=FPS, width=320, height=240)
        self.codec = av.CodecContext.create("libvpx" if codec == "vp8" else "libx264", "w")
        self.codec.width, self.codec.height = 320, 240
        self.codec.pix_fmt = "yuv420p"
        self.codec.time_base = fractions.Fraction(1, FPS)
        self.codec.bit_rate = 600_000
        self.codec.gop_size = 100_000  # no keyframe but the first and the asked-for ones
        self.codec.options = (
            {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"} if codec == "vp8"
            else {"preset": "ultrafast", "tune": "zerolatency", "profile": "baseline"})
        self.sent: dict[bytes, bool] = {}  # sha1 of each frame's bytes -> keyframe
        self.keyframes_sent: list[float] = []
        self.plis = 0
        self._force = False
        self._index = 0

    def on_rtcp(self, packet: Any) -> None:
        if isinstance(packet, RtcpPsfbPacket) and packet.fmt == 1:
            self.plis += 1
            self._force = True

    async def recv(self) -> av.Packet:
        while True:
            frame = (await self.camera.recv()).reformat(format="yuv420p")
            frame.pts, frame.time_base = self._index, self.codec.time_base
            self._index += 1
            if self._force:
                self._force = False
                frame.pict_type = av.video.frame.PictureType.I
            packets = self.codec.encode(frame)
            if not packets:
                continue
            packet = packets[0]
            self.sent[digest(bytes(packet))] = packet.is_keyframe
            if packet.is_keyframe:
                self.keyframes_sent.append(time.monotonic())
            packet.pts = round(frame.pts * 90_000 / FPS)
            packet.time_base = fractions.Fraction(1, 90_000)
            return packet

    def stop(self) -> None:
        super().stop()
        self.camera.stop()


def digest(frame: bytes) -> bytes:
    """A frame's fingerprint: its bytes, H.264's NAL units with one start code form (the
    depacketizer writes 4-byte start codes, an encoder may write 3-byte ones)."""
    if frame[:3] == b"\x00\x00\x01" or frame[:4] == b"\x00\x00\x00\x01":
        units = [u.strip(b"\x00") for u in frame.split(b"\x00\x00\x01")]
        frame = b"|".join(u for u in units if u)
    return hashlib.sha1(frame).digest()


class CloudCamera:
    """What the cloud's camera receive path gets: every whole frame before its decoder."""

    def __init__(self) -> None:
        self.frames: list[tuple[float, VideoFrameData]] = []
        self.path: ReceivePath | None = None

    def keyframes_after(self, when: float) -> list[float]:
        return [t for t, f in self.frames if t > when and f.keyframe]


@pytest.fixture
def cloud_camera(monkeypatch: pytest.MonkeyPatch) -> CloudCamera:
    """The cloud's camera frames: the one video receive path that decodes (the relay's
    own paths forward theirs)."""
    seen = CloudCamera()
    original = ReceivePath._queue_video

    def record(self: ReceivePath, codec: Any, frame: VideoFrameData) -> None:
        if self._forward is None:
            seen.path = self
            seen.frames.append((time.monotonic(), frame))
        original(self, codec, frame)

    monkeypatch.setattr(ReceivePath, "_queue_video", record)
    return seen


async def relay_session(url: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        sessions = (await http.get("/api/v1/stats")).json()["sessions"]
    assert len(sessions) == 1
    return sessions[0]


async def start(relay_url: str, camera: EncodingCamera) -> BrowserPeer:
    peer = BrowserPeer(video=True, audio=False, camera=camera)
    sender = next(t.sender for t in peer.pc.getTransceivers() if t.kind == "video")
    internals.tap_sender_rtcp(sender, camera.on_rtcp)
    response = await peer.connect_relay(relay_url, PARAMETERS)
    assert response.status_code == 200, response.text
    return peer


@pytest.mark.parametrize("codec", ["vp8", "h264"])
async def test_the_cloud_gets_the_cameras_bitstream_unchanged(codec, cloud_camera):
    async with cloud_server(video_codec=codec) as cloud, relay_server(cloud) as relay:
        await bitstream_unchanged(relay.url, codec, cloud_camera)


async def bitstream_unchanged(relay_url: str, codec: str, cloud_camera: CloudCamera) -> None:
    camera = EncodingCamera(codec)
    peer = await start(relay_url, camera)
    try:
        await wait_until(lambda: len(cloud_camera.frames) >= 60, timeout=30)
        before = [f for _, f in cloud_camera.frames]  # all forwarded before the stats
        stats = await relay_session(relay_url)
    finally:
        await peer.close()
        camera.stop()

    received = [f for _, f in cloud_camera.frames]
    assert received[0].keyframe
    digests = [digest(f.data) for f in received]
    assert all(d in camera.sent for d in digests), "the cloud got a frame the page never sent"
    assert len(set(digests)) == len(digests)
    up = stats["camera_uplink"]
    assert up["forwarding"] and up["codec"] == codec, up
    assert up["forwarded_frames"] >= len(before) and up["decoded_frames"] == 0, up
    assert up["forwarded_bytes"] >= sum(len(f.data) for f in before)


async def test_a_keyframe_request_from_the_cloud_reaches_the_cameras_sender(stack, cloud_camera):
    cloud, relay = stack
    camera = EncodingCamera()
    peer = await start(relay.url, camera)
    try:
        await wait_until(lambda: len(cloud_camera.frames) >= 30, timeout=30)
        assert cloud_camera.path is not None
        plis = camera.plis
        asked = time.monotonic()
        assert await cloud_camera.path.request_keyframe()
        await wait_until(lambda: cloud_camera.keyframes_after(asked), timeout=5)
        latency = cloud_camera.keyframes_after(asked)[0] - asked
        stats = await relay_session(relay.url)
    finally:
        await peer.close()
        camera.stop()
    assert camera.plis > plis  # the PLI reached the page's sender (relayed, not answered)
    assert [t for t in camera.keyframes_sent if t > asked]
    up = stats["camera_uplink"]
    assert up["keyframe_requests_from_cloud"] >= 1 and up["keyframe_requests_sent"] >= 1, up
    assert up["keyframes_answered"] >= 1, up
    assert latency < 2.0, latency


async def test_transcoding_when_told_still_gets_the_camera_up(stack, cloud_camera, monkeypatch):
    monkeypatch.setattr(browser_session, "FORWARD_VIDEO", False)
    cloud, relay = stack
    camera = EncodingCamera()
    peer = await start(relay.url, camera)
    try:
        await wait_until(lambda: len(cloud_camera.frames) >= 30, timeout=30)
        stats = await relay_session(relay.url)
    finally:
        await peer.close()
        camera.stop()
    up = stats["camera_uplink"]
    assert not up["forwarding"] and up["forwarded_frames"] == 0 and up["decoded_frames"] > 0, up
    # encoded again at the relay: not the page's bytes
    assert not any(digest(f.data) in camera.sent for _, f in cloud_camera.frames)


async def test_a_whip_camera_goes_up_encoded_and_gets_the_clouds_keyframe_requests(
        stack, cloud_camera):
    cloud, relay = stack
    page_camera, whip_camera = EncodingCamera(), EncodingCamera()
    peer = await start(relay.url, page_camera)
    whip = RTCPeerConnection(rtc_configuration())
    try:
        await wait_until(lambda: len(cloud_camera.frames) >= 10, timeout=30)
        sender = whip.addTransceiver(whip_camera, direction="sendonly").sender
        internals.tap_sender_rtcp(sender, whip_camera.on_rtcp)
        await whip.setLocalDescription(await whip.createOffer())
        async with httpx.AsyncClient(base_url=relay.url, timeout=60) as http:
            response = await http.post(f"/whip/{peer.session_id}",
                                       content=whip.localDescription.sdp.encode(),
                                       headers={"Content-Type": "application/sdp"})
        assert response.status_code == 201, response.text
        await whip.setRemoteDescription(RTCSessionDescription(response.text, "answer"))

        def from_whip() -> list[tuple[float, VideoFrameData]]:
            return [(t, f) for t, f in cloud_camera.frames if digest(f.data) in whip_camera.sent]
        await wait_until(lambda: len(from_whip()) >= 30, timeout=30)
        first_whip = from_whip()[0][1]
        assert first_whip.keyframe  # a new source starts at a keyframe
        assert cloud_camera.path is not None
        plis = whip_camera.plis
        asked = time.monotonic()
        assert await cloud_camera.path.request_keyframe()
        await wait_until(lambda: [t for t, f in from_whip() if t > asked and f.keyframe],
                         timeout=5)
        stats = await relay_session(relay.url)
    finally:
        await whip.close()
        await peer.close()
        page_camera.stop()
        whip_camera.stop()
    assert whip_camera.plis > plis  # the WHIP client, the camera's sender now, was asked
    up = stats["camera_uplink"]
    assert up["forwarding"] and up["decoded_frames"] == 0, up
