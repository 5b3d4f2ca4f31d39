"""The relay's camera pump keeps one timeline when its source is replaced (a WHIP sender
instead of the page's camera, and back): the cloud places camera frames on its media
clock by their timestamps, so a jump would hold (or skip) every later frame."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator

import av
import numpy as np
from aiortc import MediaStreamTrack

from scope_relay.local.inputs.camera_uplink import CameraFeed, LatestFrameTrack
from scope_relay.rtc.receive_path import EncodedVideo

#: where a source's encoded frames go (LatestFrameTrack.encoded_sink)
Sink = Callable[[EncodedVideo], None]


class Numbered(MediaStreamTrack):
    """Frames with RTP-like pts from ``first``, ``step`` apart, handed out on request."""

    kind = "video"

    def __init__(self, first: int, step: int) -> None:
        super().__init__()
        self.next_pts, self.step = first, step
        self.wanted = asyncio.Event()

    async def recv(self) -> av.VideoFrame:
        await self.wanted.wait()
        self.wanted.clear()
        frame = av.VideoFrame.from_ndarray(np.zeros((16, 16, 3), np.uint8), format="rgb24")
        frame.pts, self.next_pts = self.next_pts, self.next_pts + self.step
        return frame


async def take(pump: LatestFrameTrack, source: Numbered, n: int) -> list[int | None]:
    pts: list[int | None] = []
    for _ in range(n):
        source.wanted.set()
        frame = await pump.recv()
        pts.append(frame.pts)
    return pts


async def test_a_replaced_source_continues_the_timeline():
    page = Numbered(first=1_000, step=3000)  # 30 fps in 90 kHz
    pump = LatestFrameTrack(page)
    try:
        before = await take(pump, page, 3)
        whip = Numbered(first=5_000_000, step=1500)  # another clock, 60 fps
        pump.replace_source(whip)
        during = await take(pump, whip, 3)
        pump.replace_source(page)  # handed back: its own clock moved on meanwhile
        page.next_pts += 900_000
        after = await take(pump, page, 2)
    finally:
        pump.stop()
    assert before == [1_000, 4_000, 7_000]
    assert during == [10_000, 11_500, 13_000]  # one frame after the last, then its spacing
    assert after == [14_500, 17_500]


class Silent(MediaStreamTrack):
    """A source whose frames all come encoded (its decoded track never yields)."""

    kind = "video"

    async def recv(self) -> av.VideoFrame:
        await asyncio.Event().wait()
        raise AssertionError


class Asker:
    """Counts keyframe requests to one source's sender."""

    def __init__(self) -> None:
        self.asked = 0

    async def ask(self) -> bool:
        self.asked += 1
        return True


def encoded(pts: int, keyframe: bool = False) -> EncodedVideo:
    return EncodedVideo(bytes([pts % 256]) * 8, pts, keyframe, "video/VP8")


@contextlib.contextmanager
def encoded_pump(max_frames: int) -> Iterator[tuple[LatestFrameTrack, Sink, Asker]]:
    """A pump fed encoded frames from one source that decodes nothing: ``(pump, its sink
    for that source, who counts the source's keyframe requests)``; stopped afterwards."""
    source, asker = Silent(), Asker()
    pump = LatestFrameTrack(source, max_frames=max_frames)
    try:
        yield pump, pump.encoded_sink(source, asker.ask, lambda: 0.0), asker
    finally:
        pump.stop()


async def settle() -> None:
    for _ in range(3):  # the coalesced request's task runs
        await asyncio.sleep(0)


async def test_encoded_frames_start_at_a_keyframe_and_a_full_queue_drops_to_the_next():
    with encoded_pump(max_frames=2) as (pump, sink, asker):
        sink(encoded(0))  # no keyframe yet: dropped, the sender asked
        await settle()
        assert pump.dropped == 1 and asker.asked == 1
        for pts, key in ((3000, True), (6000, False), (9000, False)):
            sink(encoded(pts, key))
        # the oldest (a keyframe) went, and the frames after it depend on it: all gone
        assert pump.dropped == 1 + 3 and not pump._frames
        sink(encoded(12000))  # still waiting for a keyframe
        sink(encoded(15000, True))
        packet = await pump.recv()
        assert isinstance(packet, av.Packet) and packet.is_keyframe and packet.pts == 15000
        assert pump.dropped == 5 and pump.forwarded_frames == 4


async def test_a_full_queue_keeps_a_queued_keyframe():
    with encoded_pump(max_frames=2) as (pump, sink, asker):
        sink(encoded(0, True))
        sink(encoded(3000))
        sink(encoded(6000, True))  # full: the first two go, the keyframe stays
        assert pump.dropped == 2 and [p.pts for p in pump._frames] == [6000]
        await settle()
        assert asker.asked == 0  # a keyframe was queued: nobody needed asking


async def test_the_clouds_keyframe_request_goes_to_whoever_sends_the_camera_now():
    page, whip = Silent(), Silent()
    page_asker, whip_asker = Asker(), Asker()
    pump = LatestFrameTrack(page)
    page_sink = pump.encoded_sink(page, page_asker.ask, lambda: 0.0)
    whip_sink = pump.encoded_sink(whip, whip_asker.ask, lambda: 0.0)
    try:
        page_sink(encoded(0, True))
        pump.request_keyframe()
        await settle()
        assert (page_asker.asked, whip_asker.asked) == (1, 0)
        pump.replace_source(whip)  # a new source starts at a keyframe: asked for one
        await settle()
        assert whip_asker.asked == 1
        page_sink(encoded(3000, True))  # the page's frames are not the camera now
        whip_sink(encoded(500_000, True))
        assert pump.forwarded_frames == 2
        assert [p.pts for p in pump._frames] == [0, 3000]  # one timeline across sources
        assert pump.stats()["keyframe_requests_from_cloud"] == 1
    finally:
        pump.stop()


async def test_a_cloud_connection_starts_at_a_keyframe():
    with encoded_pump(max_frames=4) as (pump, sink, _):
        sink(encoded(0, True))
        sink(encoded(3000))
        await pump.recv()  # an earlier connection took the keyframe
        feed = CameraFeed(pump)
        sink(encoded(6000, True))
        first = await feed.recv()  # the delta before it is no use to a new decoder
        assert isinstance(first, av.Packet) and first.is_keyframe and first.pts == 6000
        assert pump.dropped == 1
