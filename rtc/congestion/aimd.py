"""The delay-based rate: additive/multiplicative increase, multiplicative decrease on the
detector's verdict (:mod:`.trendline`), as GCC's receiver-side rate controller does.

- **overuse**: down to :data:`BETA` x the rate really arriving (never up), at most once a
  round trip; the arriving rate then is a sample of the path's capacity, averaged
  (:attr:`AimdRate.capacity`, with its spread);
- **underuse**: hold (a queue drains; growing now would refill it);
- **normal**: grow. Near the capacity last measured (within 3 spreads): additively, about
  one packet a response time (round trip + 100 ms); elsewhere multiplicatively,
  :data:`GROWTH_PER_S` (libwebrtc: 8 %; 25 % here so a lifted ceiling is climbed back
  within 10 s: at 15 % `ceiling-1M-hd15` took 10.7 s, a clean start from 25 % 16 s).
  Never past 1.5x the arriving rate + 10 kb/s (an estimate the path never carried is not
  one). Past the capacity's upper bound, or :data:`CAPACITY_MEMORY` s
  after the last overuse, the capacity is forgotten: without probing, a lifted ceiling
  shows only as no overuse, and the additive climb alone took over 12 s back to 1.5 Mb/s.

The first estimate is the arriving rate, taken at the first overuse or after
:data:`INIT_TIME` s of normal flow. Pure logic on the caller's clock (s, b/s).
"""

from __future__ import annotations

import math

from .trendline import Usage

BETA = 0.85
GROWTH_PER_S = 0.25
INIT_TIME = 2.0
#: additive increase: at least this (b/s a second); the packet the sender is assumed to send
MIN_ADDITIVE_PER_S = 4_000.0
PACKET_BITS = 1200 * 8
FRAMES_PER_S = 30.0
#: the capacity's running average weight of a new sample, and its spread's floor/ceiling (normalised)
CAPACITY_ALPHA = 0.05
MIN_SPREAD, MAX_SPREAD = 0.4, 2.5
#: the capacity is forgotten this long (s) after the last overuse (under a steady ceiling
#: the additive climb from 0.85x meets the next overuse sooner: 3-5 s at 1-2 Mb/s)
CAPACITY_MEMORY = 5.0


class AimdRate:
    """:meth:`update` on each verdict; :attr:`rate` is the estimate (None until known)."""

    def __init__(self, floor: float = 50_000.0, ceiling: float = 100_000_000.0) -> None:
        self.floor, self.ceiling = floor, ceiling
        self.rate: float | None = None
        self.capacity: float | None = None  # b/s arriving at past overuses (average)
        self._spread = MIN_SPREAD  # its normalised variance
        self.decreases = 0
        self._holding = True
        self._since: float | None = None  # the first update
        self._last_change: float | None = None
        self._last_decrease = 0.0
        self._decreased_in_overuse = False  # this overuse has had its first decrease

    def update(self, usage: Usage, incoming: float | None, now: float, rtt: float = 0.1,
               recent: float | None = None) -> float | None:
        """The verdict ``usage`` at ``now`` with ``incoming`` b/s arriving; the new rate.
        ``recent``: b/s over a short window, taken by an overuse's first decrease when
        under 0.85x ``incoming`` (the path's rate dropped; closer, it is noise, and under a
        steady ceiling taking it held the rate ~20 % lower); the later decreases, with the
        queue draining, would read the lowered send rate and cascade down."""
        if self._since is None:
            self._since = now
        if self.rate is None:
            if incoming is None or (usage is not Usage.OVERUSE and now - self._since < INIT_TIME):
                return None
            self.rate = float(incoming)
            self._last_change = now
        last = self._last_change if self._last_change is not None else now
        elapsed = min(max(now - last, 0.0), 1.0)
        if usage is Usage.OVERUSE:
            if incoming is not None and (now - last >= min(max(rtt, 0.01), 0.2) or self.decreases == 0
                                         or incoming < 0.5 * self.rate):
                if recent is not None and not self._decreased_in_overuse and recent < BETA * incoming:
                    incoming = recent  # (0.85x the long window would land above what arrives)
                self._decrease(incoming)
                self._last_change = self._last_decrease = now
                self._decreased_in_overuse = True
            self._holding = True
        elif usage is Usage.UNDERUSE:
            self._decreased_in_overuse = False
            self._holding = True
            self._last_change = now
        else:
            self._decreased_in_overuse = False
            if self._holding:  # (hold -> increase: from now, not from the hold's start)
                self._holding = False
                elapsed = 0.0
            if self.capacity is not None and now - self._last_decrease > CAPACITY_MEMORY:
                self.capacity = None  # no overuse for a while: the path may have grown
            self._increase(incoming, elapsed, rtt)
            self._last_change = now
        return self.rate

    def _decrease(self, incoming: float) -> None:
        assert self.rate is not None
        lowered = BETA * incoming
        if lowered < self.rate:
            self.rate = max(lowered, self.floor)
            self.decreases += 1
        self._add_capacity_sample(incoming)

    def _add_capacity_sample(self, sample: float) -> None:
        if self.capacity is None or sample < self.capacity - 3 * self._std():
            self.capacity = sample  # far below what we knew: the path changed
            return
        self.capacity = (1 - CAPACITY_ALPHA) * self.capacity + CAPACITY_ALPHA * sample
        kbps, sample_kbps = max(self.capacity / 1000, 1.0), sample / 1000  # (GCC's units)
        variance = (1 - CAPACITY_ALPHA) * self._spread + CAPACITY_ALPHA * (kbps - sample_kbps) ** 2 / kbps
        self._spread = min(max(variance, MIN_SPREAD), MAX_SPREAD)

    def _std(self) -> float:
        """The capacity's spread, b/s (a 1 Mb/s capacity: 20-50 kb/s)."""
        return 1000 * math.sqrt(self._spread * max((self.capacity or 0.0) / 1000, 1.0))

    def _increase(self, incoming: float | None, elapsed: float, rtt: float) -> None:
        assert self.rate is not None
        if self.capacity is not None and self.rate > self.capacity + 3 * self._std():
            self.capacity = None  # well past what the path carried: it has grown
        if self.capacity is not None:
            bits_per_frame = self.rate / FRAMES_PER_S
            packets = max(1.0, math.ceil(bits_per_frame / PACKET_BITS))
            per_s = max(MIN_ADDITIVE_PER_S, (bits_per_frame / packets) / (rtt + 0.1))
            grown = self.rate + per_s * elapsed
        else:
            grown = self.rate * (1 + GROWTH_PER_S) ** elapsed
        if incoming is not None:
            grown = min(grown, max(self.rate, 1.5 * incoming + 10_000))
        self.rate = min(max(grown, self.floor), self.ceiling)
