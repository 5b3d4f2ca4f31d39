"""A pacer for one video sender: its packets leave at a rate, not as one burst a frame.

aiortc's sender hands every packet of a frame to the transport back to back; a 720p
keyframe is then ~50-100 packets in a millisecond, which a bottleneck's queue takes all at
once, and the audio packets sent just after wait behind it (or are dropped with it). The
pacer queues the video sender's RTP packets (retransmissions too) and sends them at
``rate()`` b/s, the encoder's target times :data:`PACING_FACTOR`, from a task of its own;
audio does not pass through it, so it goes out as soon as it is made, between video packets.

The queue is bounded twice: :data:`MAX_PACKETS` and :data:`MAX_DELAY` seconds of sending
at the current rate; a packet that finds it full is dropped and counted (the receiver asks
for it again, or for a keyframe). The encoder reads :meth:`Pacer.queue_delay` and skips
frames while it is long, so drops are the exception.

A keyframe the receiver asked for (the encoder says so with
:meth:`Pacer.expect_requested_keyframe`, while the path has shown neither loss nor a
delay overuse for a while) may run up to :data:`KEYFRAME_BURST_S` ahead of
the schedule, with the packets queued before it: the receiver shows nothing new until it
is whole, and spread at the pacing rate a 720p keyframe takes 50-90 ms. Only its own
packets leave earlier; the schedule still advances by every byte, so the packets after it
leave when they would have behind it, and the long-run rate is the pacing rate. The
pacer yields to the event loop between those packets, so audio made meanwhile goes out
between them. Periodic keyframes, which nobody waits for, stay paced.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Awaitable, Callable
from typing import Any

#: the pacing rate over the encoder's target: room for a keyframe and retransmissions,
#: but a frame's packets are still spread over most of a frame interval
PACING_FACTOR = 1.5
#: the least rate the pacer sends at, whatever the target (b/s)
MIN_PACING_RATE = 300_000
MAX_PACKETS = 1024
#: seconds of sending at the current rate the queue may hold
MAX_DELAY = 1.0
#: how far (s of sending at the pacing rate) a requested keyframe may run ahead of the
#: schedule: more than a VP8 keyframe at its cap (4 frames at the target: 89 ms at 1.5x)
KEYFRAME_BURST_S = 0.1
#: requested keyframes whose last packet's departure the stats keep
KEYFRAME_LOG = 32
#: packets may go together while they are this much (s) behind their schedule, so the
#: event loop's timer granularity does not lower the rate
BURST_S = 0.005


class Pacer:
    """Queue with :meth:`enqueue`; :meth:`run` (a task its owner cancels) sends."""

    def __init__(self, rate: Callable[[], float],
                 send: Callable[[bytes], Awaitable[None]] | None = None, *,
                 max_packets: int = MAX_PACKETS, max_delay: float = MAX_DELAY,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.send = send
        self.max_packets = max_packets
        self.max_delay = max_delay
        self.clock = clock
        self._queue: collections.deque[tuple[float, bytes]] = collections.deque()
        self._queued_bytes = 0
        self._wake = asyncio.Event()
        self.sent_packets = 0
        self.sent_bytes = 0
        self.dropped_packets = 0  # the queue was full
        self.send_errors = 0  # the transport refused (not connected)
        self.last_delay = 0.0  # the queueing delay of the last packet sent, s
        self.max_seen_delay = 0.0
        # --- requested keyframes, by packet number (the nth packet queued / taken) ---
        self._keyframe_due = 0  # packets still to come of the keyframe announced
        self._keyframe_burst = False
        self._queued_count = 0
        self._taken_count = 0
        self._burst_through = 0  # packets up to this number may run ahead
        self._keyframe_ends: collections.deque[int] = collections.deque(maxlen=KEYFRAME_LOG)
        self.keyframe_bursts = 0
        #: when requested keyframes' last packets left (the system's monotonic clock)
        self.keyframes_sent: collections.deque[float] = collections.deque(maxlen=KEYFRAME_LOG)

    def pacing_rate(self) -> float:
        return max(float(self.rate()), MIN_PACING_RATE)

    def expect_requested_keyframe(self, packets: int, *, burst: bool = True) -> None:
        """The next ``packets`` packets enqueued are a keyframe a receiver asked for (the
        encoder's word, just before its sender enqueues them); ``burst``: they may run
        ahead of the schedule (the encoder says not while the path shows congestion)."""
        self._keyframe_due = packets
        self._keyframe_burst = burst

    def enqueue(self, data: bytes) -> None:
        """Queue one RTP packet, or drop it (counted) if the queue is full."""
        keyframe_ends = False
        if self._keyframe_due:
            self._keyframe_due -= 1
            keyframe_ends = not self._keyframe_due
        backlog = (self._queued_bytes + len(data)) * 8 / self.pacing_rate()
        if len(self._queue) >= self.max_packets or (self._queue and backlog > self.max_delay):
            self.dropped_packets += 1
            return
        self._queue.append((self.clock(), data))
        self._queued_bytes += len(data)
        self._queued_count += 1
        if keyframe_ends:
            self._keyframe_ends.append(self._queued_count)
            if self._keyframe_burst:
                self._burst_through = self._queued_count
                self.keyframe_bursts += 1
        self._wake.set()

    def queue_delay(self) -> float:
        """Seconds the packet at the head has waited (0 when empty)."""
        return self.clock() - self._queue[0][0] if self._queue else 0.0

    def backlog(self) -> float:
        """Seconds the queue takes to drain at the current rate."""
        return self._queued_bytes * 8 / self.pacing_rate()

    def __len__(self) -> int:
        return len(self._queue)

    async def run(self) -> None:
        """Send the queue at the pacing rate, until cancelled."""
        assert self.send is not None, "a pacer needs a send function before it runs"
        next_at = self.clock()
        while True:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
                next_at = max(next_at, self.clock())
                continue
            now = self.clock()
            ahead = KEYFRAME_BURST_S if self._taken_count < self._burst_through else 0.0
            if now < next_at - ahead:
                await asyncio.sleep(next_at - ahead - now)
                continue
            queued_at, data = self._queue.popleft()
            self._queued_bytes -= len(data)
            self._taken_count += 1
            self.last_delay = now - queued_at
            self.max_seen_delay = max(self.max_seen_delay, self.last_delay)
            try:
                await self.send(data)
            except ConnectionError:
                self.send_errors += 1
            else:
                self.sent_packets += 1
                self.sent_bytes += len(data)
            if self._keyframe_ends and self._keyframe_ends[0] <= self._taken_count:
                self._keyframe_ends.popleft()
                self.keyframes_sent.append(self.clock())
            next_at = max(next_at, now - BURST_S) + len(data) * 8 / self.pacing_rate()
            if ahead:
                await asyncio.sleep(0)  # audio made meanwhile goes between these packets

    def stats(self) -> dict[str, Any]:
        return {"pacing_bitrate": round(self.pacing_rate()),
                "pacer_queue_packets": len(self._queue),
                "pacer_queue_delay_ms": round(max(self.queue_delay(), self.last_delay) * 1000, 1),
                "pacer_queue_delay_max_ms": round(self.max_seen_delay * 1000, 1),
                "pacer_sent_packets": self.sent_packets,
                "pacer_dropped_packets": self.dropped_packets,
                "pacer_send_errors": self.send_errors,
                "pacer_keyframe_bursts": self.keyframe_bursts,
                "pacer_keyframes_sent_monotonic": [round(t, 6) for t in self.keyframes_sent]}
