"""Packets grouped by when they were sent, and the change in delay from one group to the
next: the input of the delay-based estimate (:mod:`.trendline`).

A group is the packets sent within :data:`GROUP_SPAN` of its first one (abs-send-time),
plus those that arrive in a burst right behind it (less than :data:`BURST_GAP` apart, and
sooner than their send times are apart: a receiver's event loop that stalled hands over
a run of datagrams at once, which is no queue on the path). Between two complete groups
the sender's spacing and the receiver's spacing are compared: a queue growing on the
path spaces arrivals wider than sends. Packets older than the group being built
(reordered) are left out.

Times are seconds on the caller's clocks: send times unwrapped from abs-send-time
(:func:`unwrap_abs_send_time`), arrival times from the receiver's monotonic clock.
"""

from __future__ import annotations

from dataclasses import dataclass

#: a group: packets sent within this (s) of its first
GROUP_SPAN = 0.005
#: packets arriving less than this (s) after the one before, sooner than sent, join its group
BURST_GAP = 0.005
#: a burst that long (s) is cut into groups anyway
MAX_BURST = 0.1
#: an arrival gap this long (s) means the stream stopped: start again
RESET_GAP = 3.0
#: abs-send-time: 24 bits of seconds in 6.18 fixed point, wrapping every 64 s
ABS_SEND_TIME_WRAP = 1 << 24
ABS_SEND_TIME_UNIT = 1.0 / (1 << 18)


@dataclass(slots=True)
class Deltas:
    """Between two groups: the send spacing, the arrival spacing (s), the size change."""

    send: float
    arrival: float
    size: int


@dataclass(slots=True)
class _Group:
    first_send: float
    last_send: float
    first_arrival: float
    last_arrival: float
    size: int


class SendTimeUnwrapper:
    """abs-send-time (24 bits) to seconds that keep growing across its 64 s wrap."""

    def __init__(self) -> None:
        self._last: int | None = None
        self._seconds = 0.0

    def unwrap(self, abs_send_time: int) -> float:
        value = abs_send_time & (ABS_SEND_TIME_WRAP - 1)
        if self._last is None:
            self._seconds = value * ABS_SEND_TIME_UNIT
        else:
            step = (value - self._last) % ABS_SEND_TIME_WRAP
            if step >= ABS_SEND_TIME_WRAP // 2:
                step -= ABS_SEND_TIME_WRAP  # (an older packet: a step back)
            self._seconds += step * ABS_SEND_TIME_UNIT
        self._last = value
        return self._seconds


class InterArrival:
    """Feed packets with :meth:`add`; it returns the :class:`Deltas` when a group completes."""

    def __init__(self) -> None:
        self._current: _Group | None = None
        self._previous: _Group | None = None
        self.reordered = 0
        self.resets = 0

    def add(self, send: float, arrival: float, size: int) -> Deltas | None:
        current = self._current
        if current is None:
            self._current = _Group(send, send, arrival, arrival, size)
            return None
        if send < current.first_send:
            self.reordered += 1  # older than the group being built: its delay says nothing
            return None
        if self._joins(current, send, arrival):
            current.last_send = max(current.last_send, send)
            current.last_arrival = max(current.last_arrival, arrival)
            current.size += size
            return None
        deltas = None
        previous = self._previous
        if previous is not None:
            deltas = Deltas(current.last_send - previous.last_send,
                            current.last_arrival - previous.last_arrival,
                            current.size - previous.size)
            if deltas.arrival < 0 or deltas.arrival > RESET_GAP:
                self.resets += 1  # the receiver's clock or the stream jumped: start again
                self._previous = None
                self._current = _Group(send, send, arrival, arrival, size)
                return None
        self._previous, self._current = current, _Group(send, send, arrival, arrival, size)
        return deltas

    @staticmethod
    def _joins(group: _Group, send: float, arrival: float) -> bool:
        if send - group.first_send <= GROUP_SPAN:
            return True
        arrival_gap = arrival - group.last_arrival
        burst = arrival_gap < BURST_GAP and arrival_gap - (send - group.last_send) < 0
        return burst and arrival - group.first_arrival < MAX_BURST
