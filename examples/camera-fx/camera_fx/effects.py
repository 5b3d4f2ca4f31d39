"""The effects as torch functions on ``(T, 3, H, W)`` float frames in [0, 1].

Everything runs on the frames' device; sampling grids are cached per size, so a frame costs
a handful of kernels (one ``grid_sample``, a few convolutions) and no Python per pixel.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

_LUMA = (0.299, 0.587, 0.114)


def folded_grid(h: int, w: int, segments: int,
                device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Where each output pixel samples the camera, before turning: every angle about the
    centre folded into one mirrored wedge of ``2π / segments``. Returned as ``(x, y)``, each
    ``(H, W)``, in ``grid_sample`` units of the width, inside the centre circle so a turned
    grid never leaves the picture."""
    aspect = h / w
    y = torch.linspace(-aspect, aspect, h, device=device)[:, None].expand(h, w)
    x = torch.linspace(-1.0, 1.0, w, device=device)[None, :].expand(h, w)
    radius = torch.hypot(x, y) * (aspect / (1.0 + aspect * aspect) ** 0.5)
    wedge = 2 * math.pi / segments
    theta = (torch.remainder(torch.atan2(y, x), wedge) - wedge / 2).abs()  # mirrored wedges
    return radius * torch.cos(theta), radius * torch.sin(theta)


def kaleidoscope(frames: torch.Tensor, folded: tuple[torch.Tensor, torch.Tensor],
                 turns: torch.Tensor) -> torch.Tensor:
    """Sample each frame through the folded grid turned by ``turns`` (revolutions, one per
    frame): the camera turns under fixed mirrors, as in a real kaleidoscope's tube."""
    _, _, h, w = frames.shape
    x0, y0 = folded
    c = torch.cos(2 * math.pi * turns).view(-1, 1, 1)
    s = torch.sin(2 * math.pi * turns).view(-1, 1, 1)
    grid = torch.stack([x0 * c - y0 * s, (x0 * s + y0 * c) * (w / h)], dim=-1)
    return F.grid_sample(frames, grid, mode="bilinear", padding_mode="border",
                         align_corners=False)


def zoom_rotate_grid(h: int, w: int, zoom: float, angle: float,
                     device: torch.device) -> torch.Tensor:
    """A ``(1, H, W, 2)`` grid that shrinks the picture by ``zoom`` and turns it by ``angle``
    radians: the feedback trail drifts outwards in a spiral."""
    c, s = math.cos(angle) / zoom, math.sin(angle) / zoom
    theta = torch.tensor([[c, -s * h / w, 0.0], [s * w / h, c, 0.0]], device=device)[None]
    return F.affine_grid(theta, [1, 3, h, w], align_corners=False)


def feedback(frames: torch.Tensor, previous: torch.Tensor | None, grid: torch.Tensor,
             decay: float, hue_turn: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Each output frame is the input laid over the previous output, zoomed, turned and
    hue-rotated by ``hue_turn`` degrees, kept at ``decay``. Frames depend on each other, so
    this loops over the few frames of a call (never over pixels)."""
    out = []
    prev = frames[0] if previous is None else previous
    for frame in frames:
        trail = F.grid_sample(prev[None], grid, mode="bilinear", padding_mode="zeros",
                              align_corners=False)[0]
        trail = rotate_hue(trail[None], hue_turn)[0]
        prev = torch.maximum(frame * (1.0 - 0.5 * decay), trail * decay)
        out.append(prev)
    return torch.stack(out), prev


def _gaussian(sigma: float, device: torch.device) -> torch.Tensor:
    radius = max(1, int(3 * sigma))
    x = torch.arange(-radius, radius + 1, device=device, dtype=torch.float32)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``(N, C, H, W)``, computed at quarter size (a glow needs
    no detail) and scaled back up."""
    n, c, h, w = x.shape
    small = F.avg_pool2d(x, 4)
    k = _gaussian(sigma / 4, x.device)
    pad = len(k) // 2
    weight_x = k.view(1, 1, 1, -1).expand(c, 1, 1, -1)
    weight_y = k.view(1, 1, -1, 1).expand(c, 1, -1, 1)
    small = F.conv2d(F.pad(small, (pad, pad, 0, 0), mode="replicate"), weight_x, groups=c)
    small = F.conv2d(F.pad(small, (0, 0, pad, pad), mode="replicate"), weight_y, groups=c)
    return F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)


def edge_glow(frames: torch.Tensor, strength: float, glow_rgb: torch.Tensor) -> torch.Tensor:
    """Sobel edges of the luminance, blurred into a halo of colour ``glow_rgb`` over a dimmed
    picture: outlines light up, flat areas go dark."""
    luma = frames.mul(torch.tensor(_LUMA, device=frames.device).view(1, 3, 1, 1)).sum(1, True)
    sobel = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]],
                         device=frames.device)
    kernels = torch.stack([sobel, sobel.T])[:, None]  # (2, 1, 3, 3): d/dx, d/dy
    grad = F.conv2d(F.pad(luma, (1, 1, 1, 1), mode="replicate"), kernels)
    edges = torch.clamp(grad.abs().sum(1, keepdim=True) * 0.35, 0.0, 1.0)  # ~ |gradient|
    halo = blur(edges, 6.0) * 3.0
    glow = (edges + halo * strength) * glow_rgb.view(1, 3, 1, 1)
    return torch.clamp(frames * (1.0 - 0.8 * strength) + glow, 0.0, 1.0)


def rotate_hue(frames: torch.Tensor, degrees: float) -> torch.Tensor:
    """Turn every colour's hue by ``degrees`` (a rotation about the grey axis in YIQ),
    keeping luminance; one 3x3 matrix for the whole batch."""
    if degrees % 360 == 0:
        return frames
    a = math.radians(degrees)
    to_yiq = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322],
                           [0.211, -0.523, 0.312]], device=frames.device)
    turn = torch.tensor([[1.0, 0.0, 0.0], [0.0, math.cos(a), -math.sin(a)],
                         [0.0, math.sin(a), math.cos(a)]], device=frames.device)
    matrix = torch.linalg.inv(to_yiq) @ turn @ to_yiq
    return torch.clamp(mix_channels(frames, matrix), 0.0, 1.0)


def mix_channels(frames: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """``matrix @ rgb`` for every pixel of ``(T, 3, H, W)``, as weighted sums of the three
    planes: a 3x3 colour matrix is far too small for a convolution or matmul kernel to pay."""
    planes = frames.unbind(1)
    weights = matrix.tolist()
    return torch.stack([planes[0] * row[0] + planes[1] * row[1] + planes[2] * row[2]
                        for row in weights], dim=1)


def hue_colour(degrees: float, device: torch.device) -> torch.Tensor:
    """A saturated RGB colour at hue ``degrees`` (0: cyan-white, the glow's default)."""
    base = torch.tensor([[[[0.35]], [[1.0]], [[1.0]]]], device=device)
    return rotate_hue(base, degrees).view(3)
