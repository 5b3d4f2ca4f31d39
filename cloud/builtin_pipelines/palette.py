"""Colours (and a chord) from a prompt, for the demo built-ins: "a calm blue sea" is blue.

A small table of colour words (hues) and mood words (saturation, brightness); a prompt
naming no colour gets a hue from a hash of its text, so every prompt still has its own.
"""

from __future__ import annotations

import colorsys
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: word -> hue (0..1 around the colour wheel); a few scene words carry their usual colour
HUES: dict[str, float] = {
    "red": 0.0, "crimson": 0.97, "scarlet": 0.99, "ruby": 0.96, "lava": 0.02, "fire": 0.04,
    "blood": 0.99, "sunset": 0.06, "orange": 0.08, "amber": 0.1, "autumn": 0.08,
    "sand": 0.11, "desert": 0.1, "gold": 0.13, "golden": 0.13, "sun": 0.14, "yellow": 0.16,
    "lemon": 0.17, "lime": 0.25, "grass": 0.28, "leaf": 0.3, "green": 0.33, "forest": 0.35,
    "jungle": 0.36, "emerald": 0.4, "mint": 0.42, "teal": 0.48, "turquoise": 0.47,
    "aqua": 0.5, "cyan": 0.5, "ice": 0.53, "sky": 0.56, "sea": 0.58, "ocean": 0.6,
    "water": 0.58, "blue": 0.62, "azure": 0.58, "navy": 0.64, "night": 0.66,
    "indigo": 0.7, "violet": 0.76, "lavender": 0.75, "purple": 0.8, "plum": 0.83,
    "magenta": 0.85, "neon": 0.87, "pink": 0.92, "rose": 0.95,
}
#: words with no hue of their own: white, black and grey
GREYS: dict[str, float] = {"white": 0.95, "snow": 0.95, "silver": 0.75, "grey": 0.5,
                           "gray": 0.5, "black": 0.08, "shadow": 0.15}
#: mood words: (saturation, brightness) multipliers
MOODS: dict[str, tuple[float, float]] = {
    "calm": (0.75, 0.9), "soft": (0.6, 0.95), "pastel": (0.45, 1.0), "gentle": (0.65, 0.95),
    "misty": (0.5, 0.9), "foggy": (0.4, 0.85), "dark": (1.0, 0.5), "deep": (1.0, 0.7),
    "night": (0.9, 0.6), "dusk": (0.9, 0.7), "bright": (1.0, 1.0), "vivid": (1.0, 1.0),
    "neon": (1.0, 1.0), "electric": (1.0, 1.0), "pale": (0.4, 1.0), "faded": (0.5, 0.8),
}
#: how far from the first colour a prompt with only one picks its second (analogous)
SECOND_HUE_OFFSET = 0.1
#: the second colour's brightness against the first's (it is the field's shadow)
SHADOW = 0.45
_WORD = re.compile(r"[a-z]+")


@dataclass(frozen=True)
class Palette:
    """Two RGB colours (0..1 floats) and the hue the prompt leads with."""

    primary: tuple[float, float, float]
    secondary: tuple[float, float, float]
    hue: float
    #: the prompt named a colour (else its hue came from the hash)
    named: bool


def prompt_text(params: Mapping[str, Any]) -> str:
    """The prompts' texts, heaviest first."""
    prompts = [p for p in params.get("prompts") or [] if isinstance(p, Mapping)]
    prompts.sort(key=lambda p: -float(p.get("weight", 1.0) or 0.0))
    return " ".join(str(p.get("text", "")) for p in prompts)


def text_hash(text: str) -> int:
    """A stable number from the text (the fallback hue, the chord's root)."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big")


def palette(text: str) -> Palette:
    """The prompt's colours: its first two colour words (a mood word softens or darkens
    them), the second an analogous hue when it names one, a hash hue when it names none."""
    words = _WORD.findall(text.lower())
    saturation, value = 0.85, 0.95
    for word in words:
        if word in MOODS:
            s, v = MOODS[word]
            saturation, value = min(saturation, 0.85 * s), value * v
    colours: list[tuple[float, float, float]] = []
    hues: list[float] = []
    for word in words:
        if word in HUES:
            hues.append(HUES[word])
            colours.append(colorsys.hsv_to_rgb(HUES[word], saturation, value))
        elif word in GREYS:
            colours.append((GREYS[word],) * 3)
        if len(colours) == 2:
            break
    named = bool(colours)
    hue = hues[0] if hues else (text_hash(text) % 360) / 360
    if not colours:
        colours.append(colorsys.hsv_to_rgb(hue, saturation, value))
    if len(colours) == 1:  # an analogous hue
        second = (hue + SECOND_HUE_OFFSET) % 1.0
        colours.append(colorsys.hsv_to_rgb(second, saturation, value) if hues or not named
                       else colours[0])
    r, g, b = colours[1]  # the second is the shadow: depth in the field
    colours[1] = (r * SHADOW, g * SHADOW, b * SHADOW)
    return Palette(colours[0], colours[1], hue, named)


def chord_root(hue: float, low: float = 110.0) -> float:
    """A root note (Hz, one octave from ``low``) for a hue: around the circle of fifths, so
    neighbouring colours sound related."""
    semitone = (round(hue * 12) * 7) % 12
    return low * 2 ** (semitone / 12)


def is_warm(hue: float) -> bool:
    """Reds to yellows: a major chord; the rest minor."""
    return hue < 0.18 or hue > 0.9
