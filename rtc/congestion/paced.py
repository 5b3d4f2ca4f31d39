"""Put a video sender's packets through a :class:`~.pacer.Pacer` at its encoder's rate."""

from __future__ import annotations

from typing import Any

from scope_relay.util.tasks import OwnedTasks

from ..aiortc_internals import pace_sender, sender_encoder
from .pacer import Pacer

#: the pacing rate until the sender has built its encoder (b/s)
START_RATE = 5_000_000


def pace_video(sender: Any, tasks: OwnedTasks) -> Pacer:
    """Pace ``sender``'s RTP (``tasks`` owns the pacer's task) at its encoder's
    ``pacing_rate()``; the encoder gets the pacer as ``encoder.pacer`` (its pushback)."""

    def rate() -> float:
        encoder = sender_encoder(sender)
        if encoder is None or not hasattr(encoder, "pacing_rate"):
            return START_RATE
        if getattr(encoder, "pacer", False) is None:
            encoder.pacer = pacer
        return float(encoder.pacing_rate())

    pacer = Pacer(rate)
    pacer.send = pace_sender(sender, pacer.enqueue)
    tasks.spawn(pacer.run())
    return pacer
