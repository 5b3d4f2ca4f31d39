"""One session's beat at the cloud: the relay's grid moved onto the media clock, and the
parameter changes held back to land on it.

The relay sends its grid (reserved key ``tempo``, ``protocol/tempo.py``) with the origin on
this machine's wall clock as its sender reports show it, already moved back by the relay's
offset and playout delay: media released at wall time ``t`` is heard on ``beat_at(t)``. The
media buffer releases media time ``m`` at ``epoch + m + stall + playout_delay`` on its own
(monotonic) clock, so the grid on the media clock is one shift away, taken afresh for every
call (``stall`` grows with an underflow or a pause, and the beat follows it).
The grid handed to a call is a ``MediaTempo``: it also carries the relay's ``video_lead``
(how long before its sound the page shows a picture), so a pipeline draws pictures on the
beat *seen* (``inputs.video_tempo``) and sound on the beat heard.

Quantized changes: while the relay's ``quantize`` is not ``off``, a parameter update is held
until the first boundary after the beat being heard when it came (the relay says how long
after release that is: ``listen_delay``), and applied to the first chunk starting at that
boundary (within half a frame). An update whose boundary the generator has already passed
is applied to the next chunk and counted as late. At most ``MAX_HELD`` updates wait; beyond
that the oldest is applied at once (counted).

Thread use: :meth:`receive` and :meth:`hold` run on the event loop, the rest in the
runner's worker; one lock keeps them apart.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from scope_relay.cloud.hosting.modulation import Modulation, parse_modulations
from scope_relay.cloud.pipelines.base import MediaTempo
from scope_relay.protocol.media import SAMPLE_RATE
from scope_relay.protocol.parameters import SESSION_CONTROLS
from scope_relay.protocol.tempo import (
    TempoGrid,
    check_quantize,
    next_boundary,
    parse_tempo,
    quantum_beats,
)
from scope_relay.util.counters import Counters

logger = logging.getLogger(__name__)
#: parameter updates waiting for their boundary; beyond this the oldest goes at once
MAX_HELD = 64


class MediaClock(Protocol):
    """What the tempo needs of a session's ``MediaBuffer``."""

    epoch: float | None
    stall: int
    playout_delay: float
    clock: Callable[[], float]


@dataclass(slots=True)
class TempoCounts(Counters):
    tempo_updates: int = 0
    tempo_refused: int = 0  # a ``tempo`` value that did not parse
    modulations_refused: int = 0  # a ``modulate`` value that did not parse
    quantized_updates: int = 0  # updates held for a boundary
    quantized_late: int = 0  # ... whose boundary the generator had already passed
    quantized_overflow: int = 0  # held beyond MAX_HELD: applied at once


@dataclass
class _Held:
    beat: float
    updates: dict[str, Any] = field(default_factory=dict)


class SessionTempo:
    """The grid a session's relay sent, and the updates waiting for a boundary."""

    def __init__(self, counts: TempoCounts | None = None) -> None:
        self._lock = threading.Lock()
        self._grid: TempoGrid | None = None  # on this machine's wall clock
        self.quantize = "off"
        self.listen_delay = 0.0
        #: seconds the page shows a media time's picture before its sound (the relay's
        #: ``video_lead``): the grid for video is this much later (``MediaTempo``)
        self.video_lead = 0.0
        self._held: list[_Held] = []
        #: by parameter name (modulation.py); replaced whole by each ``modulate`` message
        self.modulations: dict[str, Modulation] = {}
        #: the runner's counts (they are a ``TempoCounts``), so the session's stats show them
        self.counts = counts if counts is not None else TempoCounts()

    # --- event loop ---------------------------------------------------------------------
    def receive(self, value: Any) -> None:
        """A ``tempo`` value from the relay; a bad one is refused (logged, counted) and the
        grid in force stays; ``None``: the relay has no tempo any more."""
        if value is None:
            with self._lock:
                self._grid, self.quantize = None, "off"
                self.counts.tempo_updates += 1
            return
        try:
            grid = parse_tempo(value)
            quantize = check_quantize(value.get("quantize", "off"))
            delay = value.get("listen_delay", 0.0)
            if isinstance(delay, bool) or not isinstance(delay, (int, float)) \
                    or not 0.0 <= delay <= 10.0:
                raise ValueError("tempo.listen_delay must be seconds from 0 to 10")
            lead = value.get("video_lead", 0.0)
            if isinstance(lead, bool) or not isinstance(lead, (int, float)) \
                    or not -1.0 <= lead <= 1.0:
                raise ValueError("tempo.video_lead must be seconds from -1 to 1")
        except ValueError as exc:
            self.counts.tempo_refused += 1
            logger.warning("ignored tempo update: %s", exc)
            return
        with self._lock:
            self._grid, self.quantize, self.listen_delay = grid, quantize, float(delay)
            self.video_lead = float(lead)
            self.counts.tempo_updates += 1

    def receive_modulations(self, value: Any) -> None:
        """A ``modulate`` value: the new set of modulations (a bad one is refused, counted,
        and the set in force stays)."""
        try:
            modulations = parse_modulations(value)
        except ValueError as exc:
            self.counts.modulations_refused += 1
            logger.warning("ignored modulation: %s", exc)
            return
        self.modulations = modulations  # (one reference swap: the worker reads it whole)

    def hold(self, updates: Mapping[str, Any], buffer: MediaClock) -> dict[str, Any]:
        """What of ``updates`` is to be applied now; pipeline parameters are kept back for
        the next boundary while quantizing (session controls such as ``paused`` never are)."""
        with self._lock:
            grid = self._grid
            quantum = None if grid is None else quantum_beats(self.quantize, grid.beats_per_bar)
            if grid is None or quantum is None:
                return dict(updates)
            now = dict((k, v) for k, v in updates.items() if k in SESSION_CONTROLS)
            later = {k: v for k, v in updates.items() if k not in SESSION_CONTROLS}
            if later:
                heard = _media_grid(grid, buffer).beat_at(
                    _media_now(buffer) - self.listen_delay).beat
                self._held.append(_Held(next_boundary(heard, quantum), later))
                self.counts.quantized_updates += 1
                if len(self._held) > MAX_HELD:
                    self.counts.quantized_overflow += 1
                    now = {**self._held.pop(0).updates, **now}
            return now

    # --- worker -------------------------------------------------------------------------
    def media_grid(self, buffer: MediaClock, chunk_start: float) -> MediaTempo | None:
        """The grid on the session's media clock as things stand (``None``: no tempo),
        carrying the video's lead for ``PipelineInputs.video_tempo``."""
        with self._lock:
            grid, lead = self._grid, self.video_lead
        if grid is None:
            return None
        media = _media_grid(grid, buffer, chunk_start)
        return MediaTempo(media.bpm, media.origin, media.beats_per_bar, media.playing, lead)

    def due(self, grid: TempoGrid | None, chunk_start: float,
            frame_seconds: float) -> dict[str, Any]:
        """The held updates whose boundary the chunk starting at ``chunk_start`` (media
        seconds) reaches, oldest first, merged."""
        out: dict[str, Any] = {}
        with self._lock:
            if not self._held:
                return out
            if grid is None:  # the tempo went away: nothing to wait for
                for held in self._held:
                    out.update(held.updates)
                self._held.clear()
                return out
            reach = grid.beat_at(chunk_start + frame_seconds / 2).beat
            keep: list[_Held] = []
            for held in self._held:
                if held.beat <= reach:
                    if held.beat < grid.beat_at(chunk_start - frame_seconds).beat:
                        self.counts.quantized_late += 1
                    out.update(held.updates)
                else:
                    keep.append(held)
            self._held = keep
        return out

    @property
    def held(self) -> int:
        with self._lock:
            return len(self._held)


def _media_now(buffer: MediaClock) -> float:
    if buffer.epoch is None:
        return 0.0
    return buffer.clock() - buffer.epoch - buffer.playout_delay - buffer.stall / SAMPLE_RATE


def _media_grid(grid: TempoGrid, buffer: MediaClock, chunk_start: float = 0.0) -> TempoGrid:
    """``grid`` (wall clock) on the media clock: media ``m`` is released at monotonic
    ``epoch + m + stall + playout_delay`` (before the first chunk, the epoch it will get)."""
    mono = buffer.clock()
    epoch = buffer.epoch if buffer.epoch is not None else mono - max(chunk_start, 0.0)
    wall_minus_clock = time.time() - mono
    return grid.shifted(-(wall_minus_clock + epoch + buffer.stall / SAMPLE_RATE
                          + buffer.playout_delay))
