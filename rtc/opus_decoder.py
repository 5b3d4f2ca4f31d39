"""Opus decoding that knows about loss: in-band FEC for a single loss, PLC for the rest.

PyAV cannot do either: FFmpeg's decoders take a packet and give its audio, with no way to
say "this one is lost, conceal it" or "decode the FEC data carried by the next one".
libopus does both through ``opus_decode(..., data=NULL / decode_fec=1)`` (:mod:`.libopus`).
Where libopus cannot be loaded, :func:`loss_aware_available` is False and the receive path
falls back to PyAV (lost packets become silence there, as before).

Frames come out as aiortc's own Opus decoder gives them: 48 kHz stereo packed s16 with
``pts`` in samples, so nothing downstream changes.
"""

from __future__ import annotations

import fractions
import logging
from dataclasses import dataclass

import av
import numpy as np

from . import libopus
from .jitter import AudioUnit

logger = logging.getLogger(__name__)

SAMPLE_RATE = 48_000
CHANNELS = 2
#: the longest Opus packet: 120 ms
MAX_PACKET_SAMPLES = 5760
TIME_BASE = fractions.Fraction(1, SAMPLE_RATE)


def loss_aware_available() -> bool:
    return libopus.available()


def carries_fec(payload: bytes | None) -> bool:
    """Whether an Opus packet carries in-band FEC (LBRR data): asked of libopus where it
    can tell (1.5+), else whether it could (SILK and hybrid frames, TOC configurations
    0-15; CELT-only packets never do)."""
    if not payload:
        return False
    known = libopus.has_lbrr(payload)
    return (payload[0] >> 3) < 16 if known is None else known


@dataclass
class DecodeStats:
    """Shared with the receive path (written by the decoder thread, read for stats)."""

    decoded: int = 0
    concealed: int = 0
    concealed_samples: int = 0
    fec_recovered: int = 0
    errors: int = 0


class LossAwareOpusDecoder:
    """Decodes :class:`~scope_relay.rtc.jitter.AudioUnit`s in order, lost ones included."""

    def __init__(self, stats: DecodeStats):
        self.stats = stats
        self._decoder = libopus.Decoder(SAMPLE_RATE, CHANNELS)

    def decode(self, unit: AudioUnit) -> list[av.AudioFrame]:
        try:
            if unit.payload is not None:
                pcm = self._decoder.decode(unit.payload, MAX_PACKET_SAMPLES)
                self.stats.decoded += 1
            elif carries_fec(unit.next_payload):
                pcm = self._decoder.decode(unit.next_payload, unit.duration, fec=True)
                self.stats.fec_recovered += 1
            else:  # packet-loss concealment: libopus extrapolates from what it has
                pcm = self._decoder.decode(None, unit.duration)
                self.stats.concealed += 1
                self.stats.concealed_samples += unit.duration
        except Exception as exc:  # a corrupt packet: conceal it rather than stop the track
            self.stats.errors += 1
            logger.warning("Opus decode failed (%s): concealed", exc)
            try:
                pcm = self._decoder.decode(None, unit.duration)
            except Exception:
                return []
        samples = np.frombuffer(pcm, dtype=np.int16)
        if not samples.size:
            return []
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="stereo")
        frame.sample_rate = SAMPLE_RATE
        frame.pts = unit.timestamp
        frame.time_base = TIME_BASE
        return [frame]
