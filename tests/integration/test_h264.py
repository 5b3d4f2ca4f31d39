"""``--video-codec h264`` end to end (rtc/video_codecs.py, rtc/h264_encoder.py): the real
``scope-relay cloud`` and ``scope-relay local`` processes streaming ``hd-test`` to an aiortc
receiver, the codec checked in the negotiated SDP, in both processes' stats and in the
received picture (frame numbers in order, PSNR against the source). The Chromium client
is in tests/browser/test_h264_page.py."""

from __future__ import annotations

import asyncio
import contextlib
import re
import statistics
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
import pytest
from aiortc import RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError
from skimage.metrics import peak_signal_noise_ratio

from scope_relay.cloud.builtin_pipelines.hd_test import frame_size, hd_test_frame, luma
from scope_relay.rtc.ice import rtc_configuration
from scope_relay.testing.camera import frame_number

from helpers.processes import _environment, _serving, cloud_process, relay_process
from helpers.waiting import wait_until

HEIGHT, FPS = 360, 15.0


def first_video_codec(sdp: str) -> str:
    """The encoding name of the first payload type on the SDP's video m-line."""
    media = sdp.split("m=video ", 1)[1]
    first = media.split("\r\n", 1)[0].split()[2]
    found = re.search(rf"a=rtpmap:{first} ([^/]+)/", media)
    assert found, media
    return found.group(1)


@dataclass
class Picture:
    """What an aiortc receiver got: every frame's number, some frames' luma."""

    numbers: list[int | None] = field(default_factory=list)
    kept: dict[int, np.ndarray] = field(default_factory=dict)


async def receive(track: Any, into: Picture) -> None:
    try:
        while True:
            frame = await track.recv()
            y = luma(frame.to_ndarray(format="yuv420p"))
            number = frame_number(y)
            into.numbers.append(number)
            if number is not None and number % 5 == 0 and len(into.kept) < 12:
                into.kept[number] = y.copy()
    except MediaStreamError:
        pass


async def stats(url: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        sessions = (await http.get("/api/v1/stats")).json()["sessions"]
    assert len(sessions) == 1, sessions
    return dict(sessions[0])


@dataclass
class Session:
    answer_sdp: str
    picture: Picture


@contextlib.asynccontextmanager
async def stream(relay_url: str, offered: list[str] | None = None
                 ) -> AsyncIterator[Session]:
    """An aiortc page offering video (only the ``offered`` codecs if given) for hd-test."""
    pc = RTCPeerConnection(rtc_configuration())
    picture = Picture()
    tasks: list[asyncio.Task] = []
    try:
        transceiver = pc.addTransceiver("video", direction="recvonly")
        if offered is not None:
            transceiver.setCodecPreferences([
                c for c in RTCRtpSender.getCapabilities("video").codecs
                if c.mimeType.split("/")[1] in offered])
        pc.on("track", lambda track: tasks.append(asyncio.ensure_future(receive(track, picture))))
        await pc.setLocalDescription(await pc.createOffer())
        async with httpx.AsyncClient(base_url=relay_url, timeout=60) as http:
            response = await http.post("/api/v1/webrtc/offer", json={
                "sdp": pc.localDescription.sdp, "type": "offer", "initialParameters": {
                    "pipeline_ids": ["hd-test"], "height": HEIGHT, "frame_rate": FPS}})
        assert response.status_code == 200, response.text
        answer = response.json()["sdp"]
        await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
        yield Session(answer, picture)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await pc.close()


def psnr(picture: Picture) -> float:
    width, height = frame_size(HEIGHT)
    return statistics.fmean(
        peak_signal_noise_ratio(luma(hd_test_frame(n, width, height, FPS)), y, data_range=255)
        for n, y in picture.kept.items())


async def check_stream(session: Session, frames: int = 45) -> None:
    """``frames`` numbered frames, in order, with a picture like the source's."""
    picture = session.picture
    await wait_until(lambda: len([n for n in picture.numbers if n is not None]) >= frames
                     and len(picture.kept) >= 6, timeout=60)
    numbers = [n for n in picture.numbers if n is not None]
    assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers), numbers
    assert numbers[-1] - numbers[0] >= frames - 1
    assert sum(n is None for n in picture.numbers) <= 2  # a readable number in (nearly) all
    assert psnr(picture) > 30.0, psnr(picture)


@pytest.fixture
async def h264_stack() -> AsyncIterator[tuple[Any, Any]]:
    async with cloud_process("--video-codec", "h264") as cloud, relay_process(cloud) as relay:
        yield cloud, relay


async def test_h264_on_both_hops(h264_stack):
    cloud, relay = h264_stack
    async with stream(relay.url) as session:  # aiortc offers VP8 first, then H.264
        assert first_video_codec(session.answer_sdp) == "H264"
        assert "packetization-mode=1" in session.answer_sdp
        await check_stream(session)
        relay_stats, cloud_stats = await stats(relay.url), await stats(cloud.url)
        assert relay_stats["video_codec"] == relay_stats["cloud_video_codec"] == "h264"
        assert cloud_stats["video_codec"] == "h264"
        assert cloud_stats["video_send"]["keyframes"] >= 1
        assert cloud_stats["video_send"]["target_bitrate"] > 0


async def test_a_page_without_h264_gets_vp8_encoded_by_the_relay(h264_stack):
    cloud, relay = h264_stack
    async with stream(relay.url, offered=["VP8"]) as session:
        assert first_video_codec(session.answer_sdp) == "VP8"
        assert "H264" not in session.answer_sdp
        await check_stream(session)
        relay_stats = await stats(relay.url)
        assert relay_stats["video_codec"] == "vp8"
        assert relay_stats["cloud_video_codec"] == "h264"


async def test_vp8_stays_the_default():
    async with cloud_process() as cloud, relay_process(cloud) as relay:
        async with stream(relay.url) as session:
            assert first_video_codec(session.answer_sdp) == "VP8"
            await check_stream(session, frames=20)
            relay_stats, cloud_stats = await stats(relay.url), await stats(cloud.url)
            assert relay_stats["video_codec"] == relay_stats["cloud_video_codec"] == "vp8"
            assert cloud_stats["video_codec"] == "vp8"


async def test_the_embedded_cloud_takes_the_flag_too():
    """``scope-relay local --video-codec h264`` with no cloud configured: its embedded
    cloud app sends H.264, and the page gets it."""
    env = _environment()
    env.pop("SCOPE_CLOUD_WS_URL", None)
    async with _serving(["local", "--host", "127.0.0.1", "--port", "0", "--browser-loopback-ice",
                         "--video-codec", "h264"], env, r"open the page: (http://\S+?)/?$",
                        "relay", 60) as (_, url, _output), stream(url) as session:
        assert first_video_codec(session.answer_sdp) == "H264"
        await check_stream(session, frames=20)
        relay_stats = await stats(url)
        assert relay_stats["video_codec"] == relay_stats["cloud_video_codec"] == "h264"
