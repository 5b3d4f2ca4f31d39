"""Beat-driven modulation of numeric parameters: each call gets the parameter's value moved
by a wave on the beat of the media time it makes (docs/tempo.md).

The reserved key ``modulate`` carries the whole set (a later message replaces it, so the
relay's memory of it survives a reconnect): ``{"modulate": {"<param>": {"shape":
"sine"|"triangle"|"saw"|"square"|"decay", "rate": <beats per cycle>, "depth": <amplitude in
the parameter's units>, "min"?, "max"?}}}``. The value a call sees is ``base + depth *
wave(beat / rate)``, clipped to ``min``/``max`` (by default the parameter's own bounds); the
base stays what the page set. ``sine``, ``triangle``, ``saw`` and ``square`` swing from -1 to
1, starting at 0 (square at 1) on a cycle's first beat; ``decay`` jumps to 1 on it and falls
exponentially (to ~1 % by the cycle's end).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from scope_relay.protocol.parameters import MODULATE, finite_number
from scope_relay.protocol.tempo import TempoGrid

SHAPES = ("sine", "triangle", "saw", "square", "decay")
#: at most this many parameters modulated at once
MAX_MODULATIONS = 32
__all__ = ["MODULATE", "ModulatedParams", "Modulation", "modulated", "parse_modulations"]


@dataclass(frozen=True)
class Modulation:
    shape: str
    rate: float  # beats per cycle
    depth: float
    low: float | None = None
    high: float | None = None

    def wave(self, beat: float) -> float:
        phase = beat / self.rate
        frac = phase - math.floor(phase)
        if self.shape == "sine":
            return math.sin(2 * math.pi * frac)
        if self.shape == "triangle":
            return 4 * frac if frac < 0.25 else 2 - 4 * frac if frac < 0.75 else 4 * frac - 4
        if self.shape == "saw":
            return 2 * frac if frac < 0.5 else 2 * frac - 2  # 0 at the cycle's start
        if self.shape == "square":
            return 1.0 if frac < 0.5 else -1.0
        return math.exp(-4.6 * frac)  # decay

    def value(self, base: float, beat: float, low: float | None, high: float | None) -> float:
        out = base + self.depth * self.wave(beat)
        low = self.low if self.low is not None else low
        high = self.high if self.high is not None else high
        if low is not None:
            out = max(out, low)
        if high is not None:
            out = min(out, high)
        return out


def _number(spec: Mapping[str, Any], key: str, default: float | None = None) -> float | None:
    value = spec.get(key, default)
    if value is None:
        return None
    number = finite_number(value)
    if number is None:
        raise ValueError(f"modulate: {key} must be a finite number")
    return number


def parse_modulations(value: Any) -> dict[str, Modulation]:
    """The ``modulate`` value as modulations by parameter name; ``ValueError`` saying why
    not (``null`` or ``{}``: none)."""
    if value is None:
        return {}
    if not isinstance(value, Mapping) or len(value) > MAX_MODULATIONS:
        raise ValueError(f"modulate must be an object of at most {MAX_MODULATIONS} parameters")
    out: dict[str, Modulation] = {}
    for name, spec in value.items():
        if not isinstance(spec, Mapping):
            raise ValueError(f"modulate.{name} must be an object")
        shape = spec.get("shape", "sine")
        if shape not in SHAPES:
            raise ValueError(f"modulate.{name}.shape must be one of {', '.join(SHAPES)}")
        rate = _number(spec, "rate", 1.0)
        if rate is None or not 1 / 64 <= rate <= 256:
            raise ValueError(f"modulate.{name}.rate must be from 1/64 to 256 beats")
        depth = _number(spec, "depth", 0.0)
        assert depth is not None
        out[str(name)] = Modulation(shape, rate, depth, _number(spec, "min"), _number(spec, "max"))
    return out


Bounds = Mapping[str, tuple[float | None, float | None, bool]]


class ModulatedParams:
    """One call's parameters as they move with the beat: :meth:`at` gives them for any media
    time, so a pipeline making several frames a call can take each frame's own value
    (``PipelineInputs.parameter_at``) rather than one value for the whole chunk."""

    def __init__(self, params: Mapping[str, Any], modulations: Mapping[str, Modulation],
                 grid: TempoGrid | None, bounds: Bounds) -> None:
        self.params = dict(params)  # (a snapshot: the worker may apply updates after the call)
        self.modulations = modulations if grid is not None else {}
        self.grid, self.bounds = grid, bounds

    def value(self, name: str, media_time: float, default: Any = None) -> Any:
        """``name``'s value at ``media_time`` (``default`` when there is no such parameter)."""
        if name not in self.params:
            return default
        base = self.params[name]
        modulation = self.modulations.get(name)
        number = finite_number(base)
        if modulation is None or self.grid is None or number is None or name not in self.bounds:
            return base  # not modulated, not a number, or not a parameter of this chain
        low, high, integer = self.bounds[name]
        value = modulation.value(number, self.grid.beat_at(media_time).beat, low, high)
        return round(value) if integer else value

    def at(self, media_time: float) -> Mapping[str, Any]:
        """Every parameter at ``media_time`` (the snapshot itself when nothing moves)."""
        if not self.modulations:
            return self.params
        out = dict(self.params)
        for name in self.modulations:
            if name in out:
                out[name] = self.value(name, media_time)
        return out


def modulated(params: Mapping[str, Any], modulations: Mapping[str, Modulation],
              grid: TempoGrid | None, media_time: float, bounds: Bounds) -> Mapping[str, Any]:
    """``params`` with each modulated numeric one moved for the beat at ``media_time`` (a
    copy); ``bounds``: a parameter's (minimum, maximum, is integer). Without a grid or a
    modulation, ``params`` itself, as calls got it before modulation existed."""
    if grid is None or not modulations:
        return params
    return ModulatedParams(params, modulations, grid, bounds).at(media_time)
