"""The session's one lazy video decoder: pixels only for the consumers that need them.

When the relay forwards the cloud's encoded video, the page's and viewers' senders take
the packets as they are; only a recording (MP4), the MPEG-TS output and NDI need decoded
frames. They read this decoder instead of the output track: it subscribes to the session's
forwarded video (a bounded fan-out subscription that starts at a keyframe and asks the
cloud for one) only while one of them is attached, decodes in a worker thread of its own,
and hands each frame (pts and time base of its packet, so on the session's clock) to its
taps (the recorder: synchronous, on the loop) and its subscribers (fan-out subscriptions:
bounded, skips counted). When the last one leaves it stops and lets the subscription go.
Frames that arrive decoded (the fallback path) pass through untouched.

To the fan-out it is a source (``track``, ``subscribers``, ``start``, ``ended``,
``released``, ``request_keyframe``), so decoded subscribers are
:class:`~scope_relay.local.sessions.fanout.CountedSubscription` like every other.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

import av
from aiortc.mediastreams import MediaStreamError

from scope_relay.local.playout.release_tracks import FrameTap, run_taps
from scope_relay.util.tasks import OwnedTasks

logger = logging.getLogger(__name__)

#: PyAV's decoder for each forwarded codec
DECODERS = {"video/vp8": "vp8", "video/h264": "h264"}


class _Kind:
    kind = "video"


class Subscription(Protocol):
    """What the decoder needs of a fan-out subscription (``fanout.CountedSubscription``)."""

    skipped: int

    async def recv(self) -> Any: ...

    def push(self, frame: Any) -> None: ...

    def end(self) -> None: ...


class LazyDecoder:
    """Decodes the session's forwarded video while something needs pixels (module doc)."""

    def __init__(self, subscribe: Callable[[], Subscription],
                 unsubscribe: Callable[[Subscription], None],
                 mime: Callable[[], str | None]):
        self._subscribe = subscribe
        self._unsubscribe = unsubscribe
        self._mime = mime
        self.track = _Kind()
        self.subscribers: set[Subscription] = set()
        self.taps: list[FrameTap] = []
        self.ended = False
        self.released = 0  # frames handed on
        self._tasks = OwnedTasks()
        self._running = False
        self._executor: ThreadPoolExecutor | None = None
        self._codec: Any = None
        self._codec_name: str | None = None
        self._packets: Subscription | None = None
        # figures
        self.starts = 0
        self.decoded = 0
        self.errors = 0
        self._dropped_before = 0  # packets skipped by subscriptions of earlier runs

    # --- the consumers ---------------------------------------------------------------------
    def add_tap(self, tap: FrameTap) -> None:
        self.taps.append(tap)
        self.start()

    def remove_tap(self, tap: FrameTap) -> None:
        if tap in self.taps:
            self.taps.remove(tap)

    def request_keyframe(self, source: str) -> None:
        """(A decoded subscriber needs none: the decoder itself started at a keyframe.)"""

    def start(self) -> None:
        """Run while a tap or subscriber is attached (they call this when they attach)."""
        if not self._running and not self.ended:
            self._running = True
            self._tasks.spawn(self._run())

    @property
    def wanted(self) -> bool:
        return bool(self.taps or self.subscribers)

    # --- decoding --------------------------------------------------------------------------
    async def _run(self) -> None:
        packets = self._packets = self._subscribe()
        self.starts += 1
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="relay-decode")
        loop = asyncio.get_running_loop()
        try:
            while self.wanted:
                item = await packets.recv()
                if isinstance(item, av.Packet):
                    frames = await loop.run_in_executor(self._executor, self._decode, item)
                else:
                    frames = [item]
                for frame in frames:
                    self.released += 1
                    run_taps(self.taps, frame)
                    for sub in list(self.subscribers):
                        sub.push(frame)
        except MediaStreamError:
            self.ended = True
            for sub in list(self.subscribers):
                sub.end()
        finally:
            self._dropped_before += packets.skipped
            self._unsubscribe(packets)
            self._packets = None
            self._codec = None  # the next run starts at a keyframe with a new decoder
            self._running = False

    def _decode(self, packet: av.Packet) -> list[av.VideoFrame]:
        """(Worker thread.) One packet to frames with its pts; a broken one is counted."""
        name = DECODERS.get((self._mime() or "video/vp8").lower())
        if name is None:
            self.errors += 1
            return []
        codec = self._codec  # (the loop may let it go when a run ends: keep our own)
        if codec is None or self._codec_name != name:
            codec = self._codec = av.CodecContext.create(name, "r")
            self._codec_name = name
        try:
            frames = codec.decode(packet)
        except av.FFmpegError as exc:
            self.errors += 1
            logger.debug("relay decoder: %s", exc)
            return []
        for frame in frames:
            frame.pts = packet.pts
            frame.time_base = packet.time_base
        self.decoded += len(frames)
        return list(frames)

    def stats(self) -> dict[str, Any]:
        running = self._packets
        return {"running": self._running, "starts": self.starts, "frames": self.decoded,
                "errors": self.errors, "consumers": len(self.taps) + len(self.subscribers),
                "dropped": self._dropped_before + (running.skipped if running else 0)}

    async def close(self) -> None:
        self.ended = True
        for sub in list(self.subscribers):
            sub.end()
        await self._tasks.cancel_all()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
