"""numpy pictures -> PyAV video frames, copied straight into the frame's planes.

PyAV's ``VideoFrame.from_ndarray`` turns every plane into a ``bytes`` object first and
copies that row by row: ~70 us for a 320x240 I420 picture, once per frame on a sender's
event loop (sixteen 24 fps sessions: ~2.5 % of a core). Writing into the planes through a
numpy view of each costs ~8 us and gives the same frame. Pictures this does not handle
(another dtype or shape, odd sizes) go to ``from_ndarray``, which also gives their errors.
"""

from __future__ import annotations

import av
import numpy as np


def _fill(plane: av.video.plane.VideoPlane, rows: np.ndarray) -> None:
    """Copy ``rows`` (height x bytes per row) into ``plane`` past its line padding."""
    view = np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)  # type: ignore[call-overload]
    view[:rows.shape[0], :rows.shape[1]] = rows


def video_frame(picture: np.ndarray) -> av.VideoFrame:
    """A ``yuv420p`` frame from a 2-D I420 picture ``(H * 3 / 2, W)``, or an ``rgb24``
    frame from ``(H, W, 3)``: the same frame ``from_ndarray`` makes, at a tenth of its cost."""
    if picture.dtype != np.uint8:
        return _slow(picture)
    if picture.ndim == 3 and picture.shape[2] == 3:
        height, width = picture.shape[:2]
        frame = av.VideoFrame(width, height, "rgb24")
        _fill(frame.planes[0], picture.reshape(height, width * 3))
        return frame
    if picture.ndim != 2 or picture.shape[0] % 3 or picture.shape[1] % 2:
        return _slow(picture)  # (odd sizes: PyAV's own checks and layout)
    width, height = picture.shape[1], picture.shape[0] * 2 // 3
    frame = av.VideoFrame(width, height, "yuv420p")
    flat = picture.reshape(-1)
    luma = width * height
    _fill(frame.planes[0], flat[:luma].reshape(height, width))
    quarter = luma // 4
    for index, start in ((1, luma), (2, luma + quarter)):
        _fill(frame.planes[index], flat[start:start + quarter].reshape(height // 2, width // 2))
    return frame


def _slow(picture: np.ndarray) -> av.VideoFrame:
    return av.VideoFrame.from_ndarray(picture, format="yuv420p" if picture.ndim == 2
                                      else "rgb24")
