"""Session parameters: the keys the protocol reserves, and the ``parameters`` data channel.

``initialParameters`` (in an offer) and every ``parameters`` data-channel message are JSON
objects of parameter values. A few keys are not pipeline parameters but part of the
contract; they are declared here, once, for both sides.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from .errors import InvalidMessage
from .messages import MAX_MESSAGE_BYTES, load_json_object

#: The chain to run. Fixed for a session once negotiated; never a live parameter.
PIPELINE_IDS = "pipeline_ids"
#: Capability hints a client (Scope) may send; the cloud registry decides, so they are ignored.
CAPABILITY_HINTS = frozenset({"produces_video", "produces_audio", "accepts_video",
                              "accepts_audio"})
#: ``true`` pauses the session: the generator is not called; once the media already made
#: has played, the picture holds, the sound is silence and the session's media clock holds
#: too (reported as paused, not as underruns). ``false`` resumes where the clock stopped:
#: no catch-up, sync and latency as before. Only JSON ``true``/``false`` (see PAUSED_SCHEMA).
PAUSED = "paused"
#: The reserved ``paused`` key's schema, checked like a pipeline's own parameters.
PAUSED_SCHEMA: dict[str, Any] = {"type": "boolean", "default": False,
                                 "description": "hold the generator, the picture and the clock"}
#: Reserved keys that are live session controls, with their schemas (any pipeline).
SESSION_CONTROLS: dict[str, dict[str, Any]] = {PAUSED: PAUSED_SCHEMA}
#: The relay's beat: ``{"bpm", "beat_time_origin", "beats_per_bar", "playing", "quantize",
#: "listen_delay"}`` (``protocol/tempo.py``, docs/tempo.md). Read by the cloud's runner
#: (the beat of every call, quantized changes); never a pipeline parameter.
TEMPO = "tempo"
#: Beat-driven modulation of numeric parameters, the whole set in one object:
#: ``{"<param>": {"shape", "rate" (beats), "depth", "min"?, "max"?}}`` (docs/tempo.md).
MODULATE = "modulate"
#: The label of the data channel that carries parameter updates (ordered, JSON text).
DATA_CHANNEL_LABEL = "parameters"

#: Offer keys that select the chain or are mere hints: everything else is a parameter.
NON_PARAMETER_KEYS = frozenset({PIPELINE_IDS}) | CAPABILITY_HINTS
#: Keys that belong to the negotiated session rather than to live updates.
CHAIN_KEYS = frozenset({PIPELINE_IDS})


def pipeline_parameters(initial: Mapping[str, Any]) -> dict[str, Any]:
    """The pipeline parameters in an offer's ``initialParameters`` (reserved keys removed)."""
    return {k: v for k, v in initial.items() if k not in NON_PARAMETER_KEYS}


def is_paused(params: Mapping[str, Any]) -> bool:
    """Whether these parameters (an offer's, or the merged live ones) pause the session."""
    return params.get(PAUSED) is True


def parse_parameters_message(message: Any) -> dict[str, Any]:
    """A ``parameters`` data-channel message: one JSON object of parameter updates."""
    if not isinstance(message, str):
        raise InvalidMessage("a parameters message must be JSON text, not binary")
    if len(message) > MAX_MESSAGE_BYTES:
        raise InvalidMessage(f"parameters message of {len(message)} characters is too large")
    return load_json_object(message, "a parameters message")


def finite_number(value: Any) -> float | None:
    """``value`` as a float if it is a finite JSON number (not a bool), else ``None``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:  # an integer with hundreds of digits
        return None
    return number if math.isfinite(number) else None


def coerce_parameter(name: str, value: Any, schema: Mapping[str, Any]) -> Any:
    """``value`` checked against one parameter's published schema (``{"type", "minimum"?,
    "maximum"?}``: number, integer, boolean, string or prompts) and returned in its kind;
    ``ValueError`` naming ``name`` otherwise. The cloud applies it to every update; a
    client may check with it before sending."""
    kind = schema.get("type")
    if kind in ("number", "integer"):
        if finite_number(value) is None:
            raise ValueError(f"{name} must be a finite number")
        low, high = schema.get("minimum"), schema.get("maximum")
        if low is not None and value < low:
            raise ValueError(f"{name} must be >= {low}")
        if high is not None and value > high:
            raise ValueError(f"{name} must be <= {high}")
        return int(value) if kind == "integer" else float(value)
    if kind == "boolean":
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be true or false")
        return value
    if kind == "string":
        if not isinstance(value, str):
            raise ValueError(f"{name} must be a string")
        return value
    if kind == "prompts":
        if not isinstance(value, list) or not all(
                isinstance(p, dict) and isinstance(p.get("text"), str)
                and finite_number(p.get("weight", 1.0)) is not None for p in value):
            raise ValueError(f"{name} must be a list of {{text, weight}} objects "
                             "with finite weights")
        return [{"text": p["text"], "weight": float(p.get("weight", 1.0))} for p in value]
    raise ValueError(f"unknown parameter kind {kind!r}")
