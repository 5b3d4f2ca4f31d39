"""Session parameters: the keys the protocol reserves, and the ``parameters`` data channel.

``initialParameters`` (in an offer) and every ``parameters`` data-channel message are JSON
objects of parameter values. A few keys are not pipeline parameters but part of the
contract; they are declared here, once, for both sides.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .errors import InvalidMessage
from .messages import MAX_MESSAGE_BYTES, load_json_object

#: The chain to run. Fixed for a session once negotiated; never a live parameter.
PIPELINE_IDS = "pipeline_ids"
#: Capability hints a client (Scope) may send; the cloud registry decides, so they are ignored.
CAPABILITY_HINTS = frozenset({"produces_video", "produces_audio", "accepts_video"})
#: ``true`` holds the generator: no pipeline call, silence and a held frame go out.
PAUSED = "paused"
#: The label of the data channel that carries parameter updates (ordered, JSON text).
DATA_CHANNEL_LABEL = "parameters"

#: Offer keys that select the chain or are mere hints: everything else is a parameter.
NON_PARAMETER_KEYS = frozenset({PIPELINE_IDS}) | CAPABILITY_HINTS
#: Keys that belong to the negotiated session rather than to live updates.
CHAIN_KEYS = frozenset({PIPELINE_IDS})


def pipeline_parameters(initial: Mapping[str, Any]) -> dict[str, Any]:
    """The pipeline parameters in an offer's ``initialParameters`` (reserved keys removed)."""
    return {k: v for k, v in initial.items() if k not in NON_PARAMETER_KEYS}


def parse_parameters_message(message: Any) -> dict[str, Any]:
    """A ``parameters`` data-channel message: one JSON object of parameter updates."""
    if not isinstance(message, str):
        raise InvalidMessage("a parameters message must be JSON text, not binary")
    if len(message) > MAX_MESSAGE_BYTES:
        raise InvalidMessage(f"parameters message of {len(message)} characters is too large")
    return load_json_object(message, "a parameters message")
