"""The beat: one tempo grid, the ``tempo`` message that carries it and the beat math both
sides share (standard library only).

A grid is a straight line from time to beats: ``beat = (t - origin) * bpm / 60``. The
relay sends it to the cloud with ``origin`` on the cloud's wall clock, already moved back by
everything between the cloud's release and the speakers (the relay's offset and playout
delay), so media the cloud releases at time ``t`` is *heard* on ``beat_at(t)``. The cloud
moves it once more onto the session's media clock, and a pipeline asks it for the beat of
the media time it is making (``PipelineInputs.tempo``, docs/tempo.md).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: tempi a grid may have; what a MIDI clock or a Link session can reach lies well inside
MIN_BPM = 20.0
MAX_BPM = 999.0
#: how a change may be held back to land on the grid, and how many beats each waits for
#: (``bar`` and the multi-bar ones count bars of ``beats_per_bar``)
QUANTIZE_MODES = ("off", "beat", "bar", "2bars", "4bars")
_QUANTIZE_BARS = {"bar": 1, "2bars": 2, "4bars": 4}


@dataclass(frozen=True)
class Beat:
    """Where a grid is at one moment."""

    bpm: float
    #: beats since the grid's origin (fractional; negative before it)
    beat: float
    beats_per_bar: int
    playing: bool

    @property
    def phase(self) -> float:
        """How far into the current beat, 0 <= phase < 1."""
        return self.beat - math.floor(self.beat)

    @property
    def bar(self) -> int:
        """Which bar (0 is the one starting at the origin)."""
        return math.floor(self.beat / self.beats_per_bar)

    @property
    def beat_in_bar(self) -> int:
        """Which beat of the bar, 0 .. beats_per_bar - 1 (0 is the downbeat)."""
        return math.floor(self.beat) % self.beats_per_bar


@dataclass(frozen=True)
class TempoGrid:
    """``bpm`` beats a minute from beat 0 at ``origin`` (seconds on some clock)."""

    bpm: float = 120.0
    origin: float = 0.0
    beats_per_bar: int = 4
    playing: bool = True

    def beat_at(self, t: float) -> Beat:
        """The beat at time ``t`` on the grid's clock."""
        return Beat(self.bpm, (t - self.origin) * self.bpm / 60.0, self.beats_per_bar,
                    self.playing)

    def time_of(self, beat: float) -> float:
        """When ``beat`` falls on the grid's clock."""
        return self.origin + beat * 60.0 / self.bpm

    @property
    def beat_seconds(self) -> float:
        return 60.0 / self.bpm

    def shifted(self, seconds: float) -> TempoGrid:
        """The same grid on a clock that reads ``seconds`` more than this one."""
        return TempoGrid(self.bpm, self.origin + seconds, self.beats_per_bar, self.playing)

    def to_message(self) -> dict[str, Any]:
        """The value of the reserved ``tempo`` key (``protocol/parameters.py``)."""
        return {"bpm": self.bpm, "beat_time_origin": self.origin,
                "beats_per_bar": self.beats_per_bar, "playing": self.playing}


def check_bpm(value: Any) -> float:
    """A tempo as a float, or ``ValueError`` saying why not."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError("bpm must be a finite number")
    if not MIN_BPM <= value <= MAX_BPM:
        raise ValueError(f"bpm must be between {MIN_BPM:g} and {MAX_BPM:g}")
    return float(value)


def check_beats_per_bar(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 32:
        raise ValueError("beats_per_bar must be a whole number from 1 to 32")
    return value


def check_quantize(value: Any) -> str:
    if value not in QUANTIZE_MODES:
        raise ValueError(f"quantize must be one of {', '.join(QUANTIZE_MODES)}")
    return str(value)


def parse_tempo(value: Any) -> TempoGrid:
    """The reserved ``tempo`` key's value as a grid; ``ValueError`` saying what is wrong."""
    if not isinstance(value, Mapping):
        raise ValueError("tempo must be an object")
    origin = value.get("beat_time_origin")
    if isinstance(origin, bool) or not isinstance(origin, (int, float)) \
            or not math.isfinite(origin):
        raise ValueError("tempo.beat_time_origin must be a finite number (seconds)")
    playing = value.get("playing", True)
    if not isinstance(playing, bool):
        raise ValueError("tempo.playing must be true or false")
    return TempoGrid(check_bpm(value.get("bpm")), float(origin),
                     check_beats_per_bar(value.get("beats_per_bar", 4)), playing)


def quantum_beats(mode: str, beats_per_bar: int) -> int | None:
    """How many beats apart a quantize mode's boundaries are; ``None`` for ``off``."""
    if mode == "beat":
        return 1
    bars = _QUANTIZE_BARS.get(mode)
    return None if bars is None else bars * beats_per_bar


def next_boundary(beat: float, quantum: int) -> float:
    """The first boundary (a multiple of ``quantum`` beats) at or after ``beat``."""
    return math.ceil(beat / quantum - 1e-9) * quantum
