"""The benchmarks' page stand-ins: an aiortc peer that reads every track it is given."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from aiortc import RTCPeerConnection
from aiortc.mediastreams import MediaStreamError

from scope_relay.rtc.ice import rtc_configuration


class TrackReader:
    """Owns a peer connection and one reader task per remote track; each received frame
    goes to :meth:`on_frame` (subclasses say what to note), and :meth:`close` ends both."""

    def __init__(self) -> None:
        self.pc = RTCPeerConnection(rtc_configuration())
        self._tasks: list[asyncio.Task] = []
        self.pc.on("track", lambda t: self._tasks.append(asyncio.ensure_future(self._read(t))))

    def on_frame(self, kind: str, frame: Any) -> None:
        """One frame of a ``kind`` track, just received."""

    async def _read(self, track: Any) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                self.on_frame(track.kind, await track.recv())

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await self.pc.close()
