"""Audio constants and exact conversions between PyAV frames and float32 arrays.

Internally audio is always a float32 array shaped ``(channels, samples)`` in [-1, 1).
Integer formats are scaled by a power of two both ways, so an s16 stream converted to
float and back is bit-exact (every ``k / 32768`` is exact in float32).
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import av
import numpy as np

from .errors import InvalidAudio

SAMPLE_RATE = 48_000
CHANNELS = 2
FRAME_SAMPLES = 960  # 20 ms at 48 kHz
FRAME_SECONDS = FRAME_SAMPLES / SAMPLE_RATE
AUDIO_TIME_BASE = Fraction(1, SAMPLE_RATE)
MAX_CHANNELS = 8

# Full-scale divisors per sample format (without the planar 'p').
_INT_SCALE = {"s16": 32768.0, "s32": 2147483648.0, "u8": 128.0, "s64": 9223372036854775808.0}
_FLOAT_FORMATS = {"flt", "dbl"}
_MINUS_3DB = np.float32(np.sqrt(0.5))


def deinterleave(packed: np.ndarray, channels: int) -> np.ndarray:
    """``(1, samples*channels)`` packed data -> contiguous ``(channels, samples)``."""
    flat = packed.reshape(-1)
    if channels <= 0 or flat.size % channels:
        raise InvalidAudio(f"{flat.size} packed values do not split into {channels} channels")
    return np.ascontiguousarray(flat.reshape(-1, channels).T)


def interleave(planar: np.ndarray) -> np.ndarray:
    """``(channels, samples)`` -> packed ``(1, samples*channels)``."""
    return np.ascontiguousarray(planar.T).reshape(1, -1)


def frame_channels(frame: av.AudioFrame) -> int:
    return len(frame.layout.channels)


def frame_to_array(frame: av.AudioFrame) -> np.ndarray:
    """Any PyAV audio frame (s16/s32/u8/flt/dbl, packed or planar, any layout) ->
    float32 ``(channels, samples)``; NaN/inf from float formats are left for the caller."""
    fmt = frame.format.name
    base = fmt.rstrip("p") if fmt.endswith("p") else fmt
    channels = frame_channels(frame)
    raw = frame.to_ndarray()
    data = raw if frame.format.is_planar else deinterleave(raw, channels)
    if data.shape[0] != channels:
        raise InvalidAudio(f"{fmt} frame gave {data.shape[0]} planes for {channels} channels")
    if base in _FLOAT_FORMATS:
        return data.astype(np.float32, copy=False)
    if base == "u8":
        return ((data.astype(np.float32) - 128.0) / 128.0).astype(np.float32, copy=False)
    if base in _INT_SCALE:
        return (data.astype(np.float64 if base in ("s32", "s64") else np.float32)
                / _INT_SCALE[base]).astype(np.float32, copy=False)
    raise InvalidAudio(f"unsupported audio sample format {fmt!r}")


def frame_to_s16(frame: av.AudioFrame) -> np.ndarray:
    """An s16/s16p frame -> int16 ``(channels, samples)`` without any float round trip."""
    name = frame.format.name
    if name not in ("s16", "s16p"):
        raise InvalidAudio(f"expected s16/s16p, got {name!r}")
    raw = frame.to_ndarray()
    return np.ascontiguousarray(raw) if frame.format.is_planar else deinterleave(
        raw, frame_channels(frame))


def sanitize(x: np.ndarray) -> tuple[np.ndarray, int]:
    """Replace NaN/inf by 0 (before any filter, where one NaN would spread). Returns the
    cleaned array and how many values were replaced."""
    finite = np.isfinite(x)
    if finite.all():
        return x, 0
    bad = int(x.size - np.count_nonzero(finite))
    return np.where(finite, x, np.float32(0)).astype(np.float32, copy=False), bad


def float_to_s16(x: np.ndarray) -> tuple[np.ndarray, int]:
    """float32 in [-1, 1) -> int16: NaN/inf -> 0, clipped (never wrapped), rounded.

    Returns the samples and the number of values that had to be clipped.
    """
    x, _ = sanitize(x)
    scaled = x * np.float32(32768.0)
    over = scaled > 32767.0
    under = scaled < -32768.0
    clipped = int(np.count_nonzero(over) + np.count_nonzero(under))
    if clipped:
        scaled = np.clip(scaled, -32768.0, 32767.0)
    return np.rint(scaled).astype(np.int16), clipped


def s16_frame(samples: np.ndarray, pts: int | None = None,
              sample_rate: int = SAMPLE_RATE) -> av.AudioFrame:
    """int16 ``(channels, samples)`` -> packed s16 PyAV frame (what aiortc's encoder takes)."""
    channels = samples.shape[0]
    layout = {1: "mono", 2: "stereo"}.get(channels)
    if layout is None:
        raise InvalidAudio(f"s16 frames are built for mono/stereo, not {channels} channels")
    frame = av.AudioFrame.from_ndarray(interleave(samples), format="s16", layout=layout)
    frame.sample_rate = sample_rate
    frame.time_base = Fraction(1, sample_rate)
    if pts is not None:
        frame.pts = pts
    return frame


def as_channels_first(data: Any, *, max_channels: int = MAX_CHANNELS) -> np.ndarray:
    """Pipeline audio (numpy-like, any dtype) -> float32 ``(channels, samples)``.

    Integers are scaled to full scale (an int16 buffer is not a ±32768 float signal).
    1-D input is mono. A 2-D array is channels-first when its first axis is a plausible
    channel count and its second is longer; ``(samples, channels)`` and shapes where the
    orientation cannot be told are refused rather than guessed.
    """
    arr = np.asarray(data)
    if arr.dtype == np.bool_ or arr.dtype.kind not in "fiu":
        raise InvalidAudio(f"audio must be numeric, got dtype {arr.dtype}")
    if arr.ndim == 1:
        arr = arr[np.newaxis, :]
    elif arr.ndim != 2:
        raise InvalidAudio(f"audio must be 1-D or 2-D (channels, samples), got shape {arr.shape}")
    rows, cols = arr.shape
    if not 1 <= rows <= max_channels:
        if 1 <= cols <= max_channels and rows > cols:
            raise InvalidAudio(
                f"audio shape {arr.shape} looks like (samples, channels); "
                "pass (channels, samples)")
        raise InvalidAudio(f"audio shape {arr.shape}: at most {max_channels} channels")
    if cols < rows and cols > 0:
        raise InvalidAudio(
            f"audio shape {arr.shape} is ambiguous: fewer samples than channels; "
            "pass (channels, samples) with at least as many samples as channels")
    kind = arr.dtype.kind
    if kind == "f":
        return np.ascontiguousarray(arr, dtype=np.float32)
    if kind == "u":
        half = float(1 << (8 * arr.dtype.itemsize - 1))
        return ((arr.astype(np.float64) - half) / half).astype(np.float32)
    full = float(1 << (8 * arr.dtype.itemsize - 1))
    return (arr.astype(np.float64) / full).astype(np.float32)


def _downmix_matrix(channels: int) -> np.ndarray:
    """Stereo downmix with the usual -3 dB centre/surround coefficients (FFmpeg channel
    order), normalised so a full-scale input on every channel cannot clip."""
    c = float(_MINUS_3DB)
    rows = {
        3: [[1, 0, c], [0, 1, c]],                                   # FL FR FC
        4: [[1, 0, c, 0], [0, 1, 0, c]],                             # FL FR BL BR
        5: [[1, 0, c, c, 0], [0, 1, c, 0, c]],                       # FL FR FC BL BR
        6: [[1, 0, c, 0, c, 0], [0, 1, c, 0, 0, c]],                 # 5.1 (LFE dropped)
        7: [[1, 0, c, 0, c, 0, c], [0, 1, c, 0, c, 0, c]],           # 6.1
        8: [[1, 0, c, 0, c, 0, c, 0], [0, 1, c, 0, 0, c, 0, c]],     # 7.1
    }
    m = np.array(rows[channels], dtype=np.float32)
    return m / m.sum(axis=1, keepdims=True).max()


def to_stereo(x: np.ndarray) -> np.ndarray:
    """Mono is duplicated; stereo passes; 3-8 channels are downmixed."""
    channels = x.shape[0]
    if channels == 2:
        return x
    if channels == 1:
        return np.repeat(x, 2, axis=0)
    if 3 <= channels <= MAX_CHANNELS:
        return (_downmix_matrix(channels) @ x).astype(np.float32, copy=False)
    raise InvalidAudio(f"cannot make stereo from {channels} channels")
