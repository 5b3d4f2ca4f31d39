"""The receiver's delay-based bandwidth estimate of one video stream, sent back as REMB.

Our own GCC receiver side in place of aiortc's ``RemoteBitrateEstimator`` (which takes its
arrival time after the event loop has got round to a packet, so a busy relay's own stalls
read as a queue on the path): packets' abs-send-time and their arrival time, taken when
the datagram came off the socket (:func:`~scope_relay.rtc.aiortc_internals.stamp_arrivals`),
go through :class:`.inter_arrival.InterArrival` (5 ms send groups), :class:`.trendline.Trendline`
(overuse / normal / underuse) and :class:`.aimd.AimdRate` (the rate). The arriving rate
is counted over the last :data:`RATE_WINDOW` s; an overuse's first decrease takes the
rate over the last :data:`OVERUSE_WINDOW` s instead when under 0.85x it
(:meth:`.AimdRate.update`): right after a ceiling drops, the long window still holds a
second of pre-drop arrivals, and 0.85x that lands above the new ceiling, so the queue
kept filling through several decreases.

:meth:`DelayBasedEstimate.on_packet` says when a REMB is due: at once when the estimate
falls by more than :data:`DROP_SHARE` (at most every :data:`MIN_DROP_INTERVAL` s), else
every :data:`REMB_INTERVAL` s. Pure logic on the caller's clock (s).

:attr:`DelayBasedEstimate.queue_delay` (read-only for others) is how far the last packet's
one-way delay (arrival - abs-send-time) lies above its floor, the minimum over the last
:data:`FLOOR_BUCKETS` one-second buckets: the queue the path holds now. The relay's playout
makes room for it (audio shares that queue: local/playout/frame_processor.py).
"""

from __future__ import annotations

from collections import deque
from typing import Any

from .aimd import AimdRate
from .inter_arrival import InterArrival, SendTimeUnwrapper
from .trendline import Trendline, Usage

RATE_WINDOW = 1.0
#: the arriving rate an overuse's first decrease may take: over this long (s: 3 frames at 30 fps;
#: a detector finds a 2x overrun's queue ~0.13 s after it starts) and this many packets
OVERUSE_WINDOW = 0.1
MIN_RECENT_PACKETS = 5
#: packets remembered for the arriving rate, at most (1 s of 40 Mb/s in 1200-byte packets)
MAX_RATE_PACKETS = 4096
REMB_INTERVAL = 1.0
DROP_SHARE = 0.03
MIN_DROP_INTERVAL = 0.1
#: no packet for this long (s: a pause, a model loading) and the stream starts afresh:
#: new send groups and detector, an empty rate window (libwebrtc times a stream out after
#: 2 s); the rate is kept. Without it the first packets after a pause met a rate window
#: of ~nothing, and an overuse then took the estimate to the floor (a 30 fps picture
#: resumed at 10 fps under the ladder, tests/browser/test_page_controls.py)
STREAM_TIMEOUT = 1.0
#: the one-way delay's floor: the minimum over this many 1 s buckets of arrivals (a floor
#: that ages lets clocks drift; 30 s outlasts any queue the estimate lets stand)
FLOOR_BUCKETS = 30


class DelayBasedEstimate:
    """Feed every received packet of one stream to :meth:`on_packet`."""

    def __init__(self, floor: float = 50_000.0, ceiling: float = 100_000_000.0) -> None:
        self._unwrap = SendTimeUnwrapper()
        self.groups = InterArrival()
        self.detector = Trendline()
        self.rate = AimdRate(floor, ceiling)
        #: the round trip (s), as the caller learns it (it paces decreases)
        self.rtt = 0.1
        self.rembs = 0
        self.rate_window_overflows = 0  # packets pushed out of the rate window early
        self._arrivals: deque[tuple[float, int]] = deque(maxlen=MAX_RATE_PACKETS)
        self._bytes = 0
        self._first: float | None = None
        self._last_arrival: float | None = None
        self.restarts = 0  # streams started afresh after STREAM_TIMEOUT s without a packet
        self._last_remb: tuple[float, float] | None = None  # (when, b/s)
        #: (arrival second, the lowest one-way delay seen in it)
        self._floors: deque[tuple[int, float]] = deque(maxlen=FLOOR_BUCKETS)
        #: the last packet's one-way delay above the floor (s): the path's queue now
        self.queue_delay = 0.0

    def incoming(self, now: float) -> float | None:
        """B/s arrived over the last :data:`RATE_WINDOW` s (None: not that long yet)."""
        while self._arrivals and self._arrivals[0][0] <= now - RATE_WINDOW:
            self._bytes -= self._arrivals.popleft()[1]
        if self._first is None or now - self._first < RATE_WINDOW:
            return None
        return self._bytes * 8 / RATE_WINDOW

    def recent_incoming(self, now: float, window: float | None = None) -> float | None:
        """B/s over the packets of the last ``window`` s (:data:`OVERUSE_WINDOW`), from the
        first's arrival to the last's (None: under :data:`MIN_RECENT_PACKETS`). Behind a
        queue the bottleneck is busy and this is its rate; timed from the first packet, not
        the window's start, a window holding a frame or two is not read as mostly empty."""
        since = now - (OVERUSE_WINDOW if window is None else window)
        total, first, first_size, last, count = 0, 0.0, 0, None, 0
        for when, size in reversed(self._arrivals):
            if when <= since:
                break
            last = when if last is None else last
            total, first, first_size, count = total + size, when, size, count + 1
        if count < MIN_RECENT_PACKETS or last is None or last <= first:
            return None
        return (total - first_size) * 8 / (last - first)  # (the first's bytes came before it)

    def on_packet(self, arrival: float, abs_send_time: int, size: int) -> int | None:
        """A packet of ``size`` bytes arrived at ``arrival`` (s); the REMB to send now, if any."""
        if self._last_arrival is not None and arrival - self._last_arrival > STREAM_TIMEOUT:
            self._restart()
        self._last_arrival = arrival
        if self._first is None:
            self._first = arrival
        if len(self._arrivals) == self._arrivals.maxlen:
            self._bytes -= self._arrivals[0][1]  # (the deque drops it: a shorter window)
            self.rate_window_overflows += 1
        self._arrivals.append((arrival, size))
        self._bytes += size
        send = self._unwrap.unwrap(abs_send_time)
        self._observe_delay(arrival - send, int(arrival))
        deltas = self.groups.add(send, arrival, size)
        if deltas is None:
            return None
        usage = self.detector.update(deltas.arrival * 1000, deltas.send * 1000, arrival * 1000)
        recent = self.recent_incoming(arrival) if usage is Usage.OVERUSE else None
        rate = self.rate.update(usage, self.incoming(arrival), arrival, self.rtt, recent)
        return None if rate is None else self._due(rate, arrival, usage)

    def _restart(self) -> None:
        """After a gap: what the groups, the detector and the rate window held is stale."""
        self.groups = InterArrival()
        overuses, self.detector = self.detector.overuses, Trendline()
        self.detector.overuses = overuses
        self._arrivals.clear()
        self._bytes = 0
        self._first = None
        self.restarts += 1

    def _observe_delay(self, one_way: float, second: int) -> None:
        floors = self._floors
        if floors and floors[-1][0] == second:
            if one_way < floors[-1][1]:
                floors[-1] = (second, one_way)
        else:
            floors.append((second, one_way))
        self.queue_delay = max(0.0, one_way - min(f for _, f in floors))

    def _due(self, rate: float, now: float, usage: Usage) -> int | None:
        last = self._last_remb
        falling = last is not None and rate < (1 - DROP_SHARE) * last[1]
        if last is None or now - last[0] >= REMB_INTERVAL or (
                falling and now - last[0] >= MIN_DROP_INTERVAL):
            self._last_remb = (now, rate)
            self.rembs += 1
            return int(rate)
        return None

    def stats(self) -> dict[str, Any]:
        rate = self.rate.rate
        return {"remb_bitrate": None if rate is None else round(rate),
                "delay_state": self.detector.state.value, "delay_overuses": self.detector.overuses,
                "delay_threshold_ms": round(self.detector.threshold, 2),
                "delay_decreases": self.rate.decreases, "rembs_sent": self.rembs,
                "reordered_groups": self.groups.reordered,
                "rate_window_overflows": self.rate_window_overflows,
                "delay_restarts": self.restarts,
                "queue_delay_ms": round(self.queue_delay * 1000, 1)}
