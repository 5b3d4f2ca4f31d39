"""The page's figures, computed at the relay: a script reading ``/api/v1/stats`` sees what
the performer sees (local/static/js/figures.js computes the same from the relay's counters).

Fed one call per video frame arriving from the cloud (a bounded deque of arrival times);
read when the stats are asked for. Windows match the page's: the received frame rate over
the last 2 s, the generator's speed over the last 6-9 s since media (re)started.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from typing import Any

#: the received frame rate is measured over this much history
FPS_WINDOW = 2.0
#: the generator's speed over at most this much history, and not before this much: long
#: enough to span a chunked generator's bursts (bursty-av: 2 s of media per call)
SPEED_WINDOW, SPEED_MIN = 9.0, 6.0
#: arrivals kept (at 120 fps, 10 s); older ones are forgotten, never counted as drops
MAX_ARRIVALS = 1200


class ArrivalFigures:
    """Video frames reaching the relay from the cloud: received fps and generator speed."""

    def __init__(self, fps: float | None, *, clock: Callable[[], float] = time.monotonic):
        #: the chain's declared frame rate (None: no verdict on speed)
        self.fps = fps if fps and fps > 0 else None
        self._clock = clock
        self._arrivals: collections.deque[float] = collections.deque(maxlen=MAX_ARRIVALS)
        #: when media (re)started: a pause's held picture or the wait for a model's first
        #: output is not the generator's speed
        self._since: float | None = None

    def video_arrived(self) -> None:
        now = self._clock()
        if self._since is None:
            self._since = now
        self._arrivals.append(now)

    def restart(self) -> None:
        """Measure the speed afresh from the next frame on (after a pause or a new hop)."""
        self._since = None

    def _count_since(self, start: float) -> int:
        return sum(1 for t in reversed(self._arrivals) if t >= start) if self._arrivals else 0

    def figures(self, *, paused: bool, camera_driven: bool) -> dict[str, Any]:
        """``fps_received`` (frames a second, last 2 s) and ``generator_speed`` (the
        frames reaching the relay against the pipeline's fps, last 6-9 s: 1.0 is real time;
        ``None`` while paused, for camera-driven chains, or before 6 s of media)."""
        now = self._clock()
        fps_received = None
        if self._arrivals:
            window = min(FPS_WINDOW, now - self._arrivals[0])
            if window >= 0.5:
                fps_received = round(self._count_since(now - window) / window, 2)
        speed = None
        if self.fps and not paused and not camera_driven and self._since is not None:
            span = min(SPEED_WINDOW, now - self._since)
            if span >= SPEED_MIN:
                speed = round(self._count_since(now - span) / (self.fps * span), 3)
        return {"fps_received": fps_received, "generator_speed": speed,
                "pipeline_fps": self.fps}
