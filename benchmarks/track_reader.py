"""The benchmarks' page stand-ins: an aiortc peer that reads every track it is given."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from aiortc import RTCPeerConnection
from aiortc.mediastreams import MediaStreamError

from scope_relay.rtc.ice import rtc_configuration
from scope_relay.rtc.receive_path import install_receive_path


class TrackReader:
    """Owns a peer connection and one reader task per remote track; each received frame
    goes to :meth:`on_frame` (subclasses say what to note), and :meth:`close` ends both."""

    def __init__(self) -> None:
        self.pc = RTCPeerConnection(rtc_configuration())
        self._tasks: list[asyncio.Task] = []
        self.pc.on("track", lambda t: self._tasks.append(asyncio.ensure_future(self._read(t))))

    def on_frame(self, kind: str, frame: Any) -> None:
        """One frame of a ``kind`` track, just received."""

    def video_undecoded(self) -> None:
        """Take received video as complete encoded frames (``on_frame`` gets each one's
        ``EncodedVideo``) instead of decoding it: many receivers on a small machine then
        cost the benchmark's process far less than the relay being measured. Call after
        adding the video transceiver."""
        for transceiver in self.pc.getTransceivers():
            if transceiver.kind == "video":
                path = install_receive_path(transceiver.receiver, "video")
                path.forward_video(lambda frame: self.on_frame("video", frame), lambda m: True)

    async def _read(self, track: Any) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                self.on_frame(track.kind, await track.recv())

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await self.pc.close()
