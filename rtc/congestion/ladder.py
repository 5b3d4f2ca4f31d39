"""What a video sender gives up when its rate is low: bitrate first, then frame rate,
then picture size, and back up again as the rate allows.

Steps (:data:`STEPS`): the source's frame rate at full size, then at most 15 fps, then
at most 10 fps, then 10 fps at half the width and height. A step is skipped where it
changes nothing (a 15 fps source goes 15 -> 10). The encoder's rate follows the estimate
at every step; the ladder only moves when the rate is far from what the step's picture
needs (``need(width, height, fps)``, the encoder's default rate for it): down when the
target stays under :data:`DOWN_SHARE` of the step's need for :data:`DOWN_HOLD` s, up when
it stays over :data:`UP_SHARE` of the step above's need for :data:`UP_HOLD` s. The gap
between the two and the hold times keep it from oscillating.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

#: (the most frames a second, the size divisor)
STEPS: tuple[tuple[float | None, int], ...] = ((None, 1), (15.0, 1), (10.0, 1), (10.0, 2))
DOWN_SHARE = 0.4
UP_SHARE = 0.5
DOWN_HOLD = 2.0
UP_HOLD = 4.0


@dataclass
class Ladder:
    """The current step for a source of ``width x height`` at ``fps`` (:meth:`update`)."""

    need: Callable[[int, int, float], int]
    step: int = 0
    moves: int = 0
    _low_since: float | None = field(default=None, repr=False)
    _high_since: float | None = field(default=None, repr=False)

    @staticmethod
    def picture(step: int, width: int, height: int, fps: float) -> tuple[int, int, float]:
        """Width, height and frame rate at ``step`` (sizes even, as I420 needs)."""
        max_fps, divisor = STEPS[step]
        scaled_w = width if divisor == 1 else max(2, width // divisor // 2 * 2)
        scaled_h = height if divisor == 1 else max(2, height // divisor // 2 * 2)
        return scaled_w, scaled_h, fps if max_fps is None else min(fps, max_fps)

    def _neighbour(self, direction: int, width: int, height: int, fps: float) -> int | None:
        """The next step that changes the picture, down (+1) or up (-1)."""
        here = self.picture(self.step, width, height, fps)
        step = self.step + direction
        while 0 <= step < len(STEPS):
            if self.picture(step, width, height, fps) != here:
                return step
            step += direction
        return None

    def update(self, target: int, width: int, height: int, fps: float, now: float) -> int:
        """The step for this target rate at ``now`` (s), moving at most one step."""
        below = self._neighbour(+1, width, height, fps)
        above = self._neighbour(-1, width, height, fps)
        if below is not None and target < DOWN_SHARE * self.need(
                *self.picture(self.step, width, height, fps)):
            self._high_since = None
            self._low_since = now if self._low_since is None else self._low_since
            if now - self._low_since >= DOWN_HOLD:
                self.step, self._low_since = below, None
                self.moves += 1
        elif above is not None and target >= UP_SHARE * self.need(
                *self.picture(above, width, height, fps)):
            self._low_since = None
            self._high_since = now if self._high_since is None else self._high_since
            if now - self._high_since >= UP_HOLD:
                self.step, self._high_since = above, None
                self.moves += 1
        else:
            self._low_since = self._high_since = None
        return self.step


@dataclass
class FrameSkipper:
    """Keeps frames at no more than ``fps`` a second from a faster source, evenly: a
    frame is kept when its time has reached the next slot."""

    _next: float | None = None

    def keep(self, media_time: float, fps: float | None, *, now: bool = False) -> bool:
        """``now``: keep this frame whatever its slot (a keyframe a receiver waits for)
        and count the next slot from it, so the rate stays ``fps``."""
        if fps is None:
            self._next = None
            return True
        interval = 1.0 / fps
        if now:
            self._next = media_time + interval
            return True
        if self._next is None or media_time < self._next - 2 * interval \
                or media_time >= self._next + interval:  # the first, or a jump: start again
            self._next = media_time + interval
            return True
        if media_time >= self._next - 0.25 * interval:
            self._next += interval  # (from the slot, not the frame: no drift)
            return True
        return False
