"""Sound and picture of one prompt mix over a span of media time, as torch ops.

Both are pure functions of media time (seconds), so a chunk's audio and video come from
the same clock and a pulse is heard exactly when it is seen. Oscillator phase is
``2π f t`` on absolute time, so chunk boundaries are seamless by construction.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from .features import Features

HARMONICS = 4


def pulse(f: Features, t: torch.Tensor) -> torch.Tensor:
    """0.55..1: a soft swell at ``tempo_hz`` (raised cosine, no sharp edge to click)."""
    return 0.775 + 0.225 * torch.cos(2 * math.pi * f.tempo_hz * t)


def voice(f: Features, t: torch.Tensor) -> torch.Tensor:
    """The prompt's chord on time ``t`` (float64 seconds): the root loudest, the other notes
    softer, each with ``HARMONICS`` overtones falling off by its brightness."""
    notes = torch.tensor(f.note_hz, dtype=t.dtype, device=t.device)  # (N,)
    level = torch.full_like(notes, 0.4)
    level[0] = 1.0
    k = torch.arange(1, HARMONICS + 1, dtype=t.dtype, device=t.device)  # (K,)
    overtone = (0.15 + 0.45 * f.brightness) ** (k - 1)
    freqs = (notes[:, None] * k[None, :]).reshape(-1)  # (N*K,)
    amps = (level[:, None] * overtone[None, :]).reshape(-1)
    amps = torch.where(freqs < 20_000, amps, torch.zeros_like(amps))
    wave = torch.sin(2 * math.pi * freqs[:, None] * t[None, :])  # (N*K, S)
    return (amps[:, None] * wave).sum(0) / amps.sum() * pulse(f, t)


def picture(f: Features, t: torch.Tensor,
            grid: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """``(T, H, W, 3)`` float in [0, 1]: flowing interference waves coloured by the palette,
    brightness following the same pulse as the sound. ``grid``: x, y (in [-1, 1], y by
    aspect) and their radius, each ``(H, W)`` float32."""
    x, y, r = grid
    # phases wrapped in float64 first, so float32 stays exact however long the piece runs
    p1, p2, p3 = ((torch.remainder(f.speed * rate * t, 1.0) * 2 * math.pi).float().view(-1, 1, 1)
                  for rate in (1.0, 0.7, 1.3))
    k = f.waves * math.pi
    field = (torch.sin(k * x + p1) + torch.sin(k * (0.6 * x + 0.8 * y) - p2)
             + torch.sin(k * r - p3))  # (T, H, W)
    u = (field / 3 + 1) / 2  # [0, 1]: position along the palette
    palette = torch.tensor(f.palette, dtype=torch.float32, device=x.device)  # (3, 3)
    lo = torch.clamp(u * 2, 0, 1)[..., None]
    hi = torch.clamp(u * 2 - 1, 0, 1)[..., None]
    rgb = palette[0] + lo * (palette[1] - palette[0]) + hi * (palette[2] - palette[1])
    return rgb * pulse(f, t).float().view(-1, 1, 1, 1)


def mixed(layers: Sequence[tuple[Features, float]], render, *args) -> torch.Tensor:
    """``render`` of a weighted prompt mix: each prompt's output by its weight."""
    total = sum(w for _, w in layers) or 1.0
    return sum(render(f, *args) * (w / total) for f, w in layers)
