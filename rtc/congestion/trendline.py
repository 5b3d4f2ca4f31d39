"""Whether a queue is building on the path, from the groups' delay changes
(:mod:`.inter_arrival`): the trendline detector of GCC (draft-ietf-rmcat-gcc, as libwebrtc
builds it).

Each group's delay change (arrival spacing - send spacing) is accumulated and smoothed
exponentially; over the last :data:`WINDOW` groups a least-squares line through (arrival
time, smoothed delay) gives the trend: how many ms the delay grows per ms. Jitter moves
single points and leaves the slope near 0; a queue filling because we send more than the
path carries tilts it. The trend, scaled by the number of groups seen (at most
:data:`MIN_DELTAS`) and :data:`GAIN`, is compared with a threshold that follows it
(slowly up, :data:`K_UP`, faster down, :data:`K_DOWN`; within [6, 600] ms), so a path
whose delay varies a lot raises its own bar and a quiet one stays sensitive:

- over the threshold for more than :data:`OVERUSE_TIME` and two groups, with the trend
  not falling: **overuse**;
- under minus the threshold: **underuse** (a queue draining);
- else **normal**.

Pure logic in milliseconds on the caller's clock.
"""

from __future__ import annotations

import enum
from collections import deque

WINDOW = 20
SMOOTHING = 0.9
GAIN = 4.0
MIN_DELTAS = 60
#: a trend over the threshold this long (ms) is an overuse
OVERUSE_TIME = 10.0
INITIAL_THRESHOLD = 12.5
MIN_THRESHOLD, MAX_THRESHOLD = 6.0, 600.0
K_UP, K_DOWN = 0.0087, 0.039
#: a trend this far (ms) past the threshold is a spike: the threshold does not follow it
MAX_ADAPT_OFFSET = 15.0
#: the threshold adapts over at most this much time (ms) per update
MAX_ADAPT_TIME = 100.0


class Usage(enum.Enum):
    NORMAL = "normal"
    OVERUSE = "overuse"
    UNDERUSE = "underuse"


class Trendline:
    """Feed :meth:`update` with each group's deltas; :attr:`state` is the verdict."""

    def __init__(self) -> None:
        self.state = Usage.NORMAL
        self.threshold = INITIAL_THRESHOLD
        self.trend = 0.0
        self.modified_trend = 0.0
        self.overuses = 0  # times the state turned to overuse
        self._deltas = 0
        self._first_arrival: float | None = None
        self._accumulated = 0.0
        self._smoothed = 0.0
        self._window: deque[tuple[float, float]] = deque(maxlen=WINDOW)
        self._over_time = -1.0
        self._over_count = 0
        self._last_threshold_update: float | None = None
        self._previous_trend = 0.0

    def update(self, arrival_delta: float, send_delta: float, arrival: float) -> Usage:
        """One group's arrival and send spacing (ms) and its arrival time (ms)."""
        self._deltas = min(self._deltas + 1, 1000)
        if self._first_arrival is None:
            self._first_arrival = arrival
        self._accumulated += arrival_delta - send_delta
        self._smoothed = SMOOTHING * self._smoothed + (1 - SMOOTHING) * self._accumulated
        self._window.append((arrival - self._first_arrival, self._smoothed))
        if len(self._window) == WINDOW:
            self.trend = _slope(self._window, self.trend)
        self._detect(send_delta, arrival)
        return self.state

    def _detect(self, send_delta: float, now: float) -> None:
        if self._deltas < 2:
            return
        modified = self.modified_trend = min(self._deltas, MIN_DELTAS) * self.trend * GAIN
        if modified > self.threshold:
            self._over_time = send_delta / 2 if self._over_time < 0 else self._over_time + send_delta
            self._over_count += 1
            if self._over_time > OVERUSE_TIME and self._over_count > 1 and self.trend >= self._previous_trend:
                self._over_time, self._over_count = 0.0, 0
                if self.state is not Usage.OVERUSE:
                    self.overuses += 1
                self.state = Usage.OVERUSE
        elif modified < -self.threshold:
            self._over_time, self._over_count = -1.0, 0
            self.state = Usage.UNDERUSE
        else:
            self._over_time, self._over_count = -1.0, 0
            self.state = Usage.NORMAL
        self._previous_trend = self.trend
        self._adapt_threshold(modified, now)

    def _adapt_threshold(self, modified: float, now: float) -> None:
        last, self._last_threshold_update = self._last_threshold_update, now
        if last is None or abs(modified) > self.threshold + MAX_ADAPT_OFFSET:
            return
        k = K_DOWN if abs(modified) < self.threshold else K_UP
        elapsed = min(now - last, MAX_ADAPT_TIME)
        self.threshold += k * (abs(modified) - self.threshold) * elapsed
        self.threshold = min(max(self.threshold, MIN_THRESHOLD), MAX_THRESHOLD)


def _slope(points: deque[tuple[float, float]], fallback: float) -> float:
    """The least-squares slope of ``points`` (``fallback`` when their x are all equal)."""
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    num = sum((x - mean_x) * (y - mean_y) for x, y in points)
    den = sum((x - mean_x) ** 2 for x, _ in points)
    return num / den if den else fallback
