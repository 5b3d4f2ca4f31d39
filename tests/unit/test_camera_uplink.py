"""The relay's camera pump keeps one timeline when its source is replaced (a WHIP sender
instead of the page's camera, and back): the cloud places camera frames on its media
clock by their timestamps, so a jump would hold (or skip) every later frame."""

from __future__ import annotations

import asyncio

import av
import numpy as np
from aiortc import MediaStreamTrack

from scope_relay.local.inputs.camera_uplink import LatestFrameTrack


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
