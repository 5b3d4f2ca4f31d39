"""The browser's camera on its way up to the cloud: bounded, and outliving cloud hops."""

from __future__ import annotations

import asyncio
import collections

from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError
from av.frame import Frame


class LatestFrameTrack(MediaStreamTrack):
    """Forwards a remote video track keeping at most a few frames (drops oldest, counted),
    so a slow encoder never lets aiortc's unbounded receive queue grow."""

    kind = "video"

    def __init__(self, source: MediaStreamTrack, max_frames: int = 2):
        super().__init__()
        self.source = source
        self._frames: collections.deque = collections.deque(maxlen=max_frames)
        self._event = asyncio.Event()
        self.dropped = 0
        #: the timeline across replaced sources (see :meth:`_continue_timeline`)
        self._rebase = False
        self._shift = 0
        self._last_pts: int | None = None
        self._step = 3000  # one frame at 30 fps in RTP's 90 kHz, until two frames say
        self._task = asyncio.get_running_loop().create_task(self._pump())

    async def _pump(self) -> None:
        try:
            while True:
                frame = await self.source.recv()
                if isinstance(frame, Frame):
                    self._continue_timeline(frame)
                if len(self._frames) == self._frames.maxlen:
                    self.dropped += 1
                self._frames.append(frame)
                self._event.set()
        except MediaStreamError:
            self._event.set()

    def replace_source(self, source: MediaStreamTrack) -> MediaStreamTrack:
        """Pump ``source`` from now on (a WHIP sender instead of the browser's camera, and
        back: local/outputs/whip.py); returns the source it replaces, which nobody reads
        any more. Readers see one uninterrupted track."""
        old, self.source = self.source, source
        self._rebase = True  # its clock is not the old source's: continue ours
        self._task.cancel()
        self._task = asyncio.get_running_loop().create_task(self._pump())
        return old

    def _continue_timeline(self, frame: Frame) -> None:
        """Keep the timestamps one timeline across :meth:`replace_source`: the first frame
        of a new source follows the last frame of the old one by one frame interval, and
        its successors keep their own spacing. (The cloud places camera frames on its media
        clock by their timestamps from the first one on; a jump would hold or skip them.)"""
        if frame.pts is None:
            return
        if self._rebase and self._last_pts is not None:
            self._shift = self._last_pts + self._step - frame.pts
            self._rebase = False
        frame.pts += self._shift
        if self._last_pts is not None and 0 < frame.pts - self._last_pts:
            self._step = frame.pts - self._last_pts
        self._last_pts = frame.pts

    async def recv(self) -> Frame:
        while not self._frames:
            if self._task.done():
                self.stop()
                raise MediaStreamError
            self._event.clear()
            await self._event.wait()
        return self._frames.popleft()

    def stop(self) -> None:
        super().stop()
        self._task.cancel()


class CameraFeed(MediaStreamTrack):
    """One cloud connection's view of the session's camera pump. aiortc stops a sender's
    track when the connection closes; stopping this view leaves the pump running for the
    connection that replaces it."""

    kind = "video"

    def __init__(self, pump: LatestFrameTrack):
        super().__init__()
        self.pump = pump

    async def recv(self) -> Frame:
        return await self.pump.recv()
