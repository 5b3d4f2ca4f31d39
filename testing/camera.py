"""A synthetic camera: a fixed test card with edges and colours, sent at a steady rate (the
real-time pacing, `PacedTrack`, is shared with the tests' fake microphone)."""

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


class PacedTrack(MediaStreamTrack):
    """A track that sends in real time, like a real device: ``await self.pace(offset)`` in
    ``recv`` waits until ``offset`` s after the first ``recv`` (late calls catch up, never
    burst ahead)."""

    def __init__(self) -> None:
        super().__init__()
        self._start: float | None = None

    async def pace(self, offset: float) -> None:
        if self._start is None:
            self._start = time.monotonic()
        due = self._start + offset
        await asyncio.sleep(max(0.0, due - time.monotonic()))  # pacing, not synchronisation


class SyntheticCamera(PacedTrack):
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

    async def recv(self) -> av.VideoFrame:
        await self.pace(self.frames_sent / self.fps)
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(self.image), format="rgb24")
        frame.pts = round(self.frames_sent * VIDEO_CLOCK / self.fps)
        frame.time_base = fractions.Fraction(1, VIDEO_CLOCK)
        self.frames_sent += 1
        return frame


#: :class:`NumberedCamera`'s code: GRID x GRID blocks of BLOCK pixels, one bit each
GRID = 4
BLOCK = 40


def numbered_frame(number: int, width: int = 640, height: int = 480) -> np.ndarray:
    """A grey ``(H, W, 3)`` frame carrying ``number`` (mod 2**16) in its top-left corner
    as black and white blocks, bit 0 first: coarse enough to survive VP8 at any bitrate."""
    frame = np.full((height, width, 3), 128, np.uint8)
    bits = (number >> np.arange(GRID * GRID)) & 1
    blocks = np.where(bits.reshape(GRID, GRID), 235, 16).astype(np.uint8)
    frame[:GRID * BLOCK, :GRID * BLOCK] = np.kron(blocks, np.ones((BLOCK, BLOCK), np.uint8))[
        :, :, None]
    return frame


def frame_number(image: np.ndarray) -> int | None:
    """The number :func:`numbered_frame` put in ``image`` (RGB or grey), or ``None`` when
    a block is not clearly black or white (a blurred or foreign frame)."""
    grey = image.mean(axis=2) if image.ndim == 3 else image
    if grey.shape[0] < GRID * BLOCK or grey.shape[1] < GRID * BLOCK:
        return None
    cells = grey[:GRID * BLOCK, :GRID * BLOCK].reshape(GRID, BLOCK, GRID, BLOCK)
    means = cells[:, 8:-8, :, 8:-8].mean(axis=(1, 3)).ravel()  # block centres
    if np.any((means > 80) & (means < 170)):
        return None
    return int(np.sum((means >= 170) << np.arange(GRID * GRID)))


class NumberedCamera(SyntheticCamera):
    """A camera whose frames carry their number (:func:`frame_number` reads it back), for
    timing a round trip: :attr:`sent_at` maps each number to when aiortc took the frame."""

    def __init__(self, *, fps: float = 30.0, width: int = 640, height: int = 480):
        super().__init__(numbered_frame(0, width, height), fps=fps)
        self.width, self.height = width, height
        self.sent_at: dict[int, float] = {}

    async def recv(self) -> av.VideoFrame:
        number = self.frames_sent % (1 << GRID * GRID)
        self.image = numbered_frame(number, self.width, self.height)
        frame = await super().recv()
        self.sent_at[number] = time.monotonic()
        return frame
