"""From prompt text to what the piece sounds and looks like: a deterministic hash, so the
same words always give the same chord, timbre, tempo, palette and motion."""

from __future__ import annotations

import colorsys
import hashlib
from dataclasses import dataclass

#: chord shapes in semitones above the root
CHORDS = ((0, 4, 7), (0, 3, 7), (0, 5, 7), (0, 4, 7, 11), (0, 3, 7, 10), (0, 7, 12))


@dataclass(frozen=True)
class Features:
    """What one prompt text means to the piece."""

    root_hz: float  #: the chord's root, the loudest partial (A2..G#4)
    intervals: tuple[int, ...]  #: chord shape, semitones above the root
    brightness: float  #: 0..1: how strong the overtones are
    tempo_hz: float  #: pulses a second, shared by sound and picture
    palette: tuple[tuple[float, float, float], ...]  #: three RGB colours in [0, 1]
    speed: float  #: how fast the picture flows
    waves: float  #: how many waves across the picture

    @property
    def note_hz(self) -> tuple[float, ...]:
        return tuple(self.root_hz * 2 ** (i / 12) for i in self.intervals)


def features(text: str) -> Features:
    """The features of ``text`` (case and surrounding space ignored)."""
    b = hashlib.sha256(text.strip().lower().encode()).digest()
    hue = b[4] / 256
    palette = tuple(colorsys.hsv_to_rgb((hue + k * (0.08 + b[5] / 1024)) % 1.0,
                                        0.55 + 0.45 * b[6 + k] / 255, 0.45 + 0.55 * (k + 1) / 3)
                    for k in range(3))
    return Features(
        root_hz=110.0 * 2 ** ((b[0] % 24) / 12),
        intervals=CHORDS[b[1] % len(CHORDS)],
        brightness=b[2] / 255,
        tempo_hz=0.75 + 1.25 * b[3] / 255,
        palette=palette,
        speed=0.2 + 0.8 * b[9] / 255,
        waves=1.5 + 4.0 * b[10] / 255,
    )
