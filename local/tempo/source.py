"""What every tempo source is: something that knows the beat grid on this machine's wall
clock (``time.time``), and the manual one (a BPM and tap tempo) that needs no hardware."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Protocol

from scope_relay.protocol.tempo import TempoGrid, check_bpm

#: taps further apart than this start a new count
TAP_RESET_SECONDS = 2.0
#: how many intervals a tap tempo averages over
TAP_WINDOW = 8


class TempoSource(Protocol):
    """A source of the beat. ``grid()`` is on ``time.time``; ``None`` while unknown."""

    name: str

    def grid(self) -> TempoGrid | None: ...

    def set_bpm(self, bpm: float) -> None:
        """Change the tempo (``ValueError`` where the source cannot, e.g. an outside clock)."""

    @property
    def peers(self) -> int: ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...


class ManualSource:
    """A BPM typed in or tapped; changing it keeps the beat running where it is (no jump)."""

    name = "manual"

    def __init__(self, bpm: float = 120.0, clock: Callable[[], float] = time.time):
        self._clock = clock
        self._grid = TempoGrid(check_bpm(bpm), clock())
        self._taps: list[float] = []

    def grid(self) -> TempoGrid:
        return self._grid

    def set_bpm(self, bpm: float) -> None:
        bpm = check_bpm(bpm)
        now = self._clock()
        beat = self._grid.beat_at(now).beat
        self._grid = TempoGrid(bpm, now - beat * 60.0 / bpm)

    def tap(self) -> None:
        """One tap: on the beat. Two or more taps set the BPM (median interval) and put a
        beat on the latest tap."""
        now = self._clock()
        if self._taps and now - self._taps[-1] > TAP_RESET_SECONDS:
            self._taps.clear()
        self._taps = (self._taps + [now])[-(TAP_WINDOW + 1):]
        if len(self._taps) < 2:
            return
        intervals = [b - a for a, b in zip(self._taps, self._taps[1:], strict=False)]
        bpm = min(max(60.0 / statistics.median(intervals), 20.0), 999.0)
        self._grid = TempoGrid(bpm, now)

    @property
    def peers(self) -> int:
        return 0

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None


class PageSource(ManualSource):
    """The page's Web MIDI clock: the page sends its BPM and the beat it is on (``PUT
    /api/v1/tempo {"bpm", "beat"}``) a few times a second; the grid is placed on arrival
    (a LAN request's delay is the error)."""

    name = "page"

    def set_beat(self, bpm: float, beat: float) -> None:
        bpm = check_bpm(bpm)
        self._grid = TempoGrid(bpm, self._clock() - beat * 60.0 / bpm)
