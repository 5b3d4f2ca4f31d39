"""A synthetic camera: a fixed test card with edges and colours, sent at a steady rate."""

from __future__ import annotations

import asyncio
import fractions
import time

import av
import numpy as np
from aiortc import MediaStreamTrack

VIDEO_CLOCK = 90_000


def colour_bars(width: int = 320, height: int = 240) -> np.ndarray:
    """``(H, W, 3)`` uint8: eight colour bars over the top two thirds, a grey ramp below,
    and a white square in the middle, so effects on colour, edges and geometry all show."""
    bars = np.array([[255, 255, 255], [255, 255, 0], [0, 255, 255], [0, 255, 0],
                     [255, 0, 255], [255, 0, 0], [0, 0, 255], [16, 16, 16]], np.uint8)
    img = np.empty((height, width, 3), np.uint8)
    split = height * 2 // 3
    img[:split] = bars[np.arange(width) * len(bars) // width][None, :, :]
    img[split:] = np.linspace(0, 255, width, dtype=np.uint8)[None, :, None]
    s = min(width, height) // 6
    cy, cx = height // 2, width // 2
    img[cy - s:cy + s, cx - s:cx + s] = 255
    return img


class SyntheticCamera(MediaStreamTrack):
    """A video track sending ``image`` (default: :func:`colour_bars`) at ``fps``.

    Frames are paced on the wall clock from the first ``recv`` (late calls catch up, never
    burst ahead), like a real camera. ``image`` may be replaced while streaming.
    """

    kind = "video"

    def __init__(self, image: np.ndarray | None = None, *, fps: float = 30.0):
        super().__init__()
        self.image = colour_bars() if image is None else image
        self.fps = fps
        self.frames_sent = 0
        self._start: float | None = None

    async def recv(self) -> av.VideoFrame:
        if self._start is None:
            self._start = time.monotonic()
        due = self._start + self.frames_sent / self.fps
        await asyncio.sleep(max(0.0, due - time.monotonic()))  # pacing, not synchronisation
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(self.image), format="rgb24")
        frame.pts = round(self.frames_sent * VIDEO_CLOCK / self.fps)
        frame.time_base = fractions.Fraction(1, VIDEO_CLOCK)
        self.frames_sent += 1
        return frame
