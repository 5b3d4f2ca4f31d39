"""Keyframe requests passed upstream, coalesced: many asks, one PLI while one is out.

When the relay forwards the cloud's encoded video, a PLI or FIR from the page or a viewer
cannot be answered by the relay (it has no encoder): only the cloud's encoder can make a
keyframe. Every consumer that needs one (a page's or viewer's sender told so by its
receiver, a new subscriber, the lazy decoder starting, a playout queue that must skip)
calls :meth:`UpstreamKeyframes.request`; one PLI goes to the cloud, and further requests
are coalesced while it is outstanding: until a keyframe arrives, or one round trip of the
cloud hop plus a frame interval (and a margin) has passed without one (then the next
request sends again). Pure logic around an injected ``send``; the caller owns the loop.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiortc.rtp import RtcpPsfbPacket

from .aiortc_internals import tap_sender_rtcp

logger = logging.getLogger(__name__)

#: added to round trip + frame interval before an unanswered request may be sent again
MARGIN = 0.02
#: answered requests whose timestamps the stats keep
TIMELINE = 32
#: the frame interval assumed until frames have shown theirs
DEFAULT_FRAME_INTERVAL = 1 / 30
_PLI, _FIR = 1, 4  # RTCP payload-specific feedback formats (RFC 4585, 5104)


class UpstreamKeyframes:
    """One receiver's keyframe requests to its sender (the cloud), coalesced."""

    def __init__(self, send: Callable[[], Awaitable[bool]], rtt: Callable[[], float], *,
                 clock: Callable[[], float] = time.monotonic):
        self._send = send
        self._rtt = rtt
        self.clock = clock
        self.frame_interval = DEFAULT_FRAME_INTERVAL
        self._last_frame: float | None = None
        self._outstanding: float | None = None  # when the PLI now awaited was sent
        self._tasks: set[asyncio.Task[Any]] = set()
        self.requested: collections.Counter[str] = collections.Counter()  # by who asked
        self.sent = 0
        self.coalesced = 0
        self.answered = 0
        #: seconds from each PLI sent to its keyframe's arrival (the latest 32)
        self.latencies: collections.deque[float] = collections.deque(maxlen=32)
        #: the latest answered requests as [asked, sent, answered] on ``clock`` (the
        #: system's monotonic clock: comparable with the cloud's and a receiver's on one
        #: host, which is how benchmarks/keyframe_latency.py splits the latency in stages)
        self.timeline: collections.deque[tuple[float, float, float]] = collections.deque(
            maxlen=TIMELINE)
        self._asked: float | None = None  # the first ask the outstanding PLI answers
        self._sent_at: float | None = None

    def request(self, source: str) -> None:
        """``source`` wants a keyframe: one PLI upstream unless one is already out."""
        self.requested[source] += 1
        now = self.clock()
        if self._outstanding is not None and \
                now - self._outstanding < self._rtt() + self.frame_interval + MARGIN:
            self.coalesced += 1
            return
        self._outstanding = self._asked = now
        self._sent_at = None
        task = asyncio.get_running_loop().create_task(self._send_one())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send_one(self) -> None:
        try:
            sending = self.clock()  # (the cloud may have it before the await returns)
            if await self._send():
                self.sent += 1
                self._sent_at = sending
            else:
                self._outstanding = None  # nothing to ask yet (no stream): not outstanding
        except Exception as exc:  # a closing transport: the next request tries again
            logger.debug("keyframe request not sent: %s", exc)
            self._outstanding = None

    def frame(self, keyframe: bool) -> None:
        """A frame came from upstream (learns the frame interval; a keyframe answers)."""
        now = self.clock()
        if self._last_frame is not None and 0 < now - self._last_frame < 1.0:
            self.frame_interval += 0.1 * (now - self._last_frame - self.frame_interval)
        self._last_frame = now
        if keyframe and self._outstanding is not None:
            self.answered += 1
            self.latencies.append(now - self._outstanding)
            if self._asked is not None and self._sent_at is not None:
                self.timeline.append((self._asked, self._sent_at, now))
            self._outstanding = self._asked = self._sent_at = None

    def sender_changed(self) -> None:
        """Another sender sends from now on (a WHIP client instead of the page's camera):
        a request out to the old one answers nothing, the next one is sent at once."""
        self._outstanding = None
        self._last_frame = None

    def close(self) -> None:
        for task in self._tasks:
            task.cancel()

    def stats(self) -> dict[str, Any]:
        latencies = sorted(self.latencies)
        return {"requested": dict(self.requested), "sent": self.sent,
                "coalesced": self.coalesced, "answered": self.answered,
                "latency_ms_median": round(latencies[len(latencies) // 2] * 1000, 1)
                if latencies else None,
                "timeline_monotonic": [[round(t, 6) for t in row] for row in self.timeline]}


def pass_keyframe_requests(sender: Any, ask: Callable[[], None]) -> None:
    """Call ``ask()`` for every PLI or FIR ``sender``'s receiver sends (aiortc would only
    make its own encoder's next frame a keyframe: for forwarded packets, nothing)."""
    def on_packet(packet: Any) -> None:
        if isinstance(packet, RtcpPsfbPacket) and packet.fmt in (_PLI, _FIR):
            ask()

    tap_sender_rtcp(sender, on_packet)
