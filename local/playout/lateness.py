"""When late audio should raise the relay's playout delay, and by how much.

Audio that arrives after its read time is lost (dropped, counted); raising the delay
prevents the next loss at the price of latency for the rest of the session (until calm
gives it back). A single *episode* of lateness is usually not jitter: after the cloud or
the network stalls, what was held back arrives in one catch-up burst, all of it late, and
raising the delay for it would only add latency once everything runs again. So the delay
rises only for lateness that repeats (a second episode within ``repeat_window``) or lasts
(late frames for ``sustained`` s: the path itself got slower), and then by a bounded step
each time (the lateness + 10 ms, at least ``min_step``, at most ``max_step``), never the
whole burst at once. After a raise only frames read after it count: a frame read before
it was late already and says nothing about whether the raise was enough.

An episode is a run of late frames that ends at the next frame that arrives in time.
"""

from __future__ import annotations

import collections

#: a late episode lasting this long is a slower path, not a burst (a burst arrives at once):
#: raise (again) after it
SUSTAINED = 0.1
#: a second late episode within this many seconds of the last one is jitter: raise
REPEAT_WINDOW = 10.0
#: what one raise adds: the lateness + a 10 ms margin, within these bounds
MIN_STEP = 0.02
MAX_STEP = 0.08
MARGIN = 0.01


class LatenessPolicy:
    def __init__(self, *, sustained: float = SUSTAINED, repeat_window: float = REPEAT_WINDOW,
                 min_step: float = MIN_STEP, max_step: float = MAX_STEP):
        self.sustained = sustained
        self.repeat_window = repeat_window
        self.min_step = min_step
        self.max_step = max_step
        self.episodes = 0
        #: episodes that ended without raising anything (a lone catch-up burst)
        self.forgiven = 0
        self.raises = 0
        self._ended: collections.deque[float] = collections.deque()
        self._start: float | None = None
        self._last_raise: float | None = None
        self._repeated = False

    def late(self, arrival: float, read_at: float) -> float:
        """A frame came at ``arrival``, after the output read its slot at ``read_at``: how
        much to raise the delay (0: not now)."""
        if self._start is None:
            self._start, self._last_raise = arrival, None
            while self._ended and arrival - self._ended[0] > self.repeat_window:
                self._ended.popleft()
            self._repeated = bool(self._ended)
            self.episodes += 1
        if self._last_raise is None:
            due = self._repeated or arrival - self._start >= self.sustained
        else:  # raised in this episode: again only if frames read since are still late
            due = read_at >= self._last_raise and arrival - self._last_raise >= self.sustained
        if not due:
            return 0.0
        self._last_raise = arrival
        self.raises += 1
        return min(max(arrival - read_at + MARGIN, self.min_step), self.max_step)

    def on_time(self, arrival: float) -> None:
        """A frame came in time: a late episode, if any, is over."""
        if self._start is None:
            return
        if self._last_raise is None:
            self.forgiven += 1
        self._ended.append(arrival)
        self._start = None
