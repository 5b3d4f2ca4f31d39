"""``hd-test``: HD test content for measuring picture quality end to end.

Smooth moving colour over a soft texture (compressible like a natural picture, unlike a
test card or noise) with the frame's number drawn in its top-left corner as black and
white blocks (``scope_relay.testing.frame_number`` reads it back), so a receiver matches
every decoded frame to its source exactly: :func:`hd_test_frame` makes frame ``n`` again
from ``n`` alone. Frames are made as I420, so the cloud's encoder gets them as they are.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from scope_relay.cloud.pipelines.base import InputFrame, ParamSpec, Pipeline, PipelineOutput

#: the number code (as ``scope_relay.testing.camera``): GRID x GRID blocks of BLOCK px
GRID = 4
BLOCK = 40
#: the texture pans this far (pixels) around a circle
PAN = 48


def frame_size(height: int) -> tuple[int, int]:
    """(width, height) of a 16:9 picture about ``height`` lines tall (I420: the height
    a multiple of 4, the width even)."""
    height = max(GRID * BLOCK, int(height)) // 4 * 4
    return (round(height * 16 / 9) // 2 * 2, height)


class _Texture:
    """A soft random texture, made once per size: coarse noise smoothly upsampled."""

    _cache: dict[tuple[int, int], np.ndarray] = {}

    @classmethod
    def get(cls, width: int, height: int) -> np.ndarray:
        key = (width, height)
        if key not in cls._cache:
            rng = np.random.default_rng(27)
            h, w = height + 2 * PAN, width + 2 * PAN
            coarse = torch.from_numpy(rng.random((1, 1, h // 24 + 2, w // 24 + 2)).astype(np.float32))
            fine = torch.nn.functional.interpolate(coarse, size=(h, w), mode="bicubic",
                                                   align_corners=False)[0, 0].numpy()
            detail = torch.nn.functional.interpolate(
                torch.from_numpy(rng.random((1, 1, h // 6 + 2, w // 6 + 2)).astype(np.float32)),
                size=(h, w), mode="bilinear", align_corners=False)[0, 0].numpy()
            cls._cache[key] = (fine * 70 + detail * 25).astype(np.float32)
        return cls._cache[key]


def hd_test_frame(number: int, width: int = 1280, height: int = 720,
                  fps: float = 30.0) -> np.ndarray:
    """Frame ``number`` as I420: ``(height * 3 // 2, width)`` uint8 (Y, then U and V
    side by side as PyAV lays them out). Deterministic in its arguments."""
    t = number / fps
    texture = _Texture.get(width, height)
    dx = PAN + round(PAN * math.cos(2 * math.pi * t / 6))
    dy = PAN + round(PAN * math.sin(2 * math.pi * t / 6))
    x = np.arange(width, dtype=np.float32) / width
    y = np.arange(height, dtype=np.float32) / height
    waves = np.outer(np.cos(2 * math.pi * (1.3 * y - 0.11 * t)),
                     np.sin(2 * math.pi * (1.7 * x + 0.07 * t)))
    luma = 80 + 45 * waves + texture[dy:dy + height, dx:dx + width]
    out = np.empty((height * 3 // 2, width), np.uint8)
    np.clip(luma, 16, 235, out=luma)
    out[:height] = luma
    cw, ch = width // 2, height // 2
    u = 128 + 50 * np.outer(np.ones(ch, np.float32),
                            np.sin(2 * math.pi * (x[::2] - 0.05 * t)))
    v = 128 + 50 * np.outer(np.cos(2 * math.pi * (y[::2] + 0.04 * t)),
                            np.ones(cw, np.float32))
    chroma = out[height:].reshape(ch, 2, cw)  # rows of U then V, each half a row wide
    chroma[:ch // 2, :, :] = u.reshape(ch // 2, 2, cw)
    chroma[ch // 2:, :, :] = v.reshape(ch // 2, 2, cw)
    _draw_number(out, number, width, height)
    return out


def _draw_number(frame: np.ndarray, number: int, width: int, height: int) -> None:
    """``number`` mod 2**16 in the top-left corner, bit 0 first: luma 235 or 16 blocks on
    neutral chroma (what ``frame_number`` reads from RGB or luma)."""
    bits = (number >> np.arange(GRID * GRID)) & 1
    blocks = np.where(bits.reshape(GRID, GRID), 235, 16).astype(np.uint8)
    side = GRID * BLOCK
    frame[:side, :side] = np.kron(blocks, np.ones((BLOCK, BLOCK), np.uint8))
    ch, cw = height // 2, width // 2
    chroma = frame[height:].reshape(2, ch, cw)  # U plane then V plane, each (ch, cw)
    chroma[:, :side // 2, :side // 2] = 128


def luma(i420: np.ndarray) -> np.ndarray:
    """The Y plane of an I420 frame as made by :func:`hd_test_frame` (or PyAV)."""
    return i420[:i420.shape[0] * 2 // 3]


class HdTest(Pipeline):
    """1280x720 (or ``height`` lines, 16:9) at ``fps``: a video-only quality test."""

    pipeline_id = "hd-test"
    name = "HD test picture"
    produces_video = True
    fps = 30.0
    params = {
        "height": ParamSpec("integer", 720, "picture height in lines (16:9)", 160, 2160,
                            label="Height (lines)"),
        "frame_rate": ParamSpec("number", 30.0, "frames per second", 1.0, 60.0,
                                label="Frame rate (fps)"),
    }

    def __init__(self, device: str = "cpu"):
        super().__init__(device)
        self._frame = 0

    def __call__(self, inputs: Sequence[InputFrame] | None,
                 params: Mapping[str, Any]) -> PipelineOutput:
        fps = float(params["frame_rate"])
        width, height = frame_size(int(params["height"]))
        count = max(1, round(fps / 10))  # 0.1 s a call
        frames = np.stack([hd_test_frame(self._frame + k, width, height, fps)
                           for k in range(count)])
        self._frame += count
        return PipelineOutput(video=torch.from_numpy(frames).to(self.device), fps=fps,
                              video_format="yuv420p")
