"""Capability flags: what a pipeline (or a chain of them) produces and accepts.

The cloud registry is the only authority; everyone else reads these from the API.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Capabilities:
    produces_video: bool
    produces_audio: bool
    accepts_video: bool
    #: the chain takes audio input (a microphone); defaulted so three-flag callers still work
    accepts_audio: bool = False

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> Capabilities:
        return cls(
            produces_video=bool(data.get("produces_video", False)),
            produces_audio=bool(data.get("produces_audio", False)),
            accepts_video=bool(data.get("accepts_video", False)),
            accepts_audio=bool(data.get("accepts_audio", False)),
        )

    def as_dict(self) -> dict[str, bool]:
        return asdict(self)


def direction(send: bool, receive: bool) -> str:
    """The SDP direction for what this side sends and receives on one m-line."""
    if send:
        return "sendrecv" if receive else "sendonly"
    return "recvonly" if receive else "inactive"


def chain_capabilities(stages: Iterable[Capabilities]) -> Capabilities:
    """Flags of a chain of pipelines run in order.

    The rule (docs/architecture.md): a chain produces video iff its *last* stage does (video
    flows stage to stage and only the last one's frames leave), produces audio iff *any*
    stage does (audio is passed through the chain), and accepts video iff its *first*
    stage does, and accepts audio iff its *first* stage does (inputs reach only the first
    stage; later ones see the previous stage's output).
    """
    stages = list(stages)
    if not stages:
        raise ValueError("a chain needs at least one pipeline")
    return Capabilities(
        produces_video=stages[-1].produces_video,
        produces_audio=any(s.produces_audio for s in stages),
        accepts_video=stages[0].accepts_video,
        accepts_audio=stages[0].accepts_audio,
    )
