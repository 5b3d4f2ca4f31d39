"""Exact conversions between PyAV frames and float32 arrays.

Internally audio is always a float32 array shaped ``(channels, samples)`` in [-1, 1).
Integer formats are scaled by a power of two both ways, so an s16 stream converted to
float and back is bit-exact (every ``k / 32768`` is exact in float32).
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

import av
import numpy as np

from scope_relay.protocol.errors import InvalidAudio
from scope_relay.protocol.media import MAX_CHANNELS, SAMPLE_RATE

_FLOAT_FORMATS = {"flt", "dbl"}
_MINUS_3DB = np.float32(np.sqrt(0.5))
_TIME_BASE = Fraction(1, SAMPLE_RATE)


def interleave(planar: np.ndarray) -> np.ndarray:
    """``(channels, samples)`` -> packed ``(1, samples*channels)``."""
    return np.ascontiguousarray(planar.T).reshape(1, -1)


_DTYPES: dict[str, type[np.generic]] = {
    "s16": np.int16, "s32": np.int32, "flt": np.float32, "dbl": np.float64, "u8": np.uint8,
    "s64": np.int64}


def frame_samples(frame: av.AudioFrame) -> np.ndarray:
    """The frame's samples in their own dtype as ``(channels, samples)``, without copying
    where possible (packed data comes back as a transposed view of the interleaved buffer).

    Reads the planes' buffers directly: PyAV's ``to_ndarray`` costs several microseconds
    per call and crashes on 8+ planes.
    """
    fmt = frame.format.name
    base = fmt[:-1] if fmt.endswith("p") else fmt
    dtype = _DTYPES.get(base)
    if dtype is None:
        raise InvalidAudio(f"unsupported audio sample format {fmt!r}")
    channels = frame.layout.nb_channels
    n = frame.samples
    if n == 0:
        return np.zeros((channels, 0), dtype)
    if frame.format.is_planar:
        planes = frame.planes
        if len(planes) < channels:
            raise InvalidAudio(f"{fmt} frame has {len(planes)} planes for {channels} channels")
        return np.stack([np.frombuffer(memoryview(planes[i]), dtype, count=n)
                         for i in range(channels)])
    packed = np.frombuffer(memoryview(frame.planes[0]), dtype, count=n * channels)
    return packed.reshape(n, channels).T


def frame_to_array(frame: av.AudioFrame) -> np.ndarray:
    """Any PyAV audio frame (s16/s32/u8/flt/dbl, packed or planar, any layout) ->
    float32 ``(channels, samples)`` (possibly a non-contiguous view); NaN/inf from float
    formats are left for the caller."""
    data = frame_samples(frame)
    kind = data.dtype
    if kind == np.float32:
        return data
    if kind == np.float64:
        return data.astype(np.float32)
    if kind == np.int16:
        return data * np.float32(1 / 32768)
    if kind == np.uint8:
        return (data.astype(np.float32) - 128.0) * np.float32(1 / 128)
    full = float(1 << (8 * kind.itemsize - 1))
    return (data.astype(np.float64) / full).astype(np.float32)


def frame_to_s16(frame: av.AudioFrame) -> np.ndarray:
    """An s16/s16p frame -> int16 ``(channels, samples)`` without any float round trip."""
    name = frame.format.name
    if name not in ("s16", "s16p"):
        raise InvalidAudio(f"expected s16/s16p, got {name!r}")
    return frame_samples(frame)


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

    Returns the samples and the number of values that had to be clipped. The common case
    (finite, in range) costs one multiply, two reductions and the rounding.
    """
    scaled = np.multiply(x, np.float32(32768.0), dtype=np.float32)
    if scaled.size:
        hi, lo = scaled.max(), scaled.min()  # NaN propagates into both
        if not (hi <= 32767.0 and lo >= -32768.0):
            return _float_to_s16_slow(scaled)
    return np.rint(scaled, out=scaled).astype(np.int16), 0


def _float_to_s16_slow(scaled: np.ndarray) -> tuple[np.ndarray, int]:
    finite = np.isfinite(scaled)
    scaled = np.where(finite, scaled, np.float32(0))
    clipped = int(np.count_nonzero(scaled > 32767.0) + np.count_nonzero(scaled < -32768.0))
    np.clip(scaled, -32768.0, 32767.0, out=scaled)
    return np.rint(scaled, out=scaled).astype(np.int16), clipped


def s16_frame(samples: np.ndarray, pts: int | None = None,
              sample_rate: int = SAMPLE_RATE) -> av.AudioFrame:
    """int16 ``(channels, samples)`` -> packed s16 PyAV frame (what aiortc's encoder takes)."""
    channels = samples.shape[0]
    layout = {1: "mono", 2: "stereo"}.get(channels)
    if layout is None:
        raise InvalidAudio(f"s16 frames are built for mono/stereo, not {channels} channels")
    count = samples.shape[1]
    if samples.dtype != np.int16 or not count:
        frame = av.AudioFrame.from_ndarray(interleave(samples), format="s16", layout=layout)
    else:
        # interleaved straight into the frame's buffer, a channel at a time: from_ndarray
        # interleaves into a new array (a transposed copy, ~4 us for 20 ms of stereo),
        # makes bytes of it and copies those
        frame = av.AudioFrame(format="s16", layout=layout, samples=count)
        packed = np.frombuffer(memoryview(frame.planes[0]), np.int16,
                               count=count * channels)
        for channel in range(channels):
            packed[channel::channels] = samples[channel]
    frame.sample_rate = sample_rate
    frame.time_base = _TIME_BASE if sample_rate == SAMPLE_RATE else Fraction(1, sample_rate)
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


#: Channel order assumed for channels-first arrays without a layout (FFmpeg's defaults).
DEFAULT_CHANNEL_NAMES = {
    1: ("FC",), 2: ("FL", "FR"), 3: ("FL", "FR", "FC"), 4: ("FL", "FR", "BL", "BR"),
    5: ("FL", "FR", "FC", "BL", "BR"), 6: ("FL", "FR", "FC", "LFE", "BL", "BR"),
    7: ("FL", "FR", "FC", "LFE", "BC", "SL", "SR"),
    8: ("FL", "FR", "FC", "LFE", "BL", "BR", "SL", "SR"),
}
LAYOUT_NAMES = {1: "mono", 2: "stereo", 3: "3.0", 4: "quad", 5: "5.0", 6: "5.1", 7: "6.1",
                8: "7.1"}


def frame_channel_names(frame: av.AudioFrame) -> tuple[str, ...]:
    return tuple(c.name for c in frame.layout.channels)


def downmix_matrix(names: tuple[str, ...]) -> np.ndarray:
    """Stereo downmix with the usual coefficients: fronts at 1, centre and surrounds at
    -3 dB, LFE dropped; rows normalised so full scale on every channel cannot clip."""
    c = float(_MINUS_3DB)
    rows = np.zeros((2, len(names)), dtype=np.float32)
    for i, name in enumerate(names):
        if name == "LFE" or name.startswith("LFE"):
            continue
        if name in ("FL", "FR"):
            rows[0 if name == "FL" else 1, i] = 1.0
        elif name.endswith("L") or name.endswith("LC"):
            rows[0, i] = c
        elif name.endswith("R") or name.endswith("RC"):
            rows[1, i] = c
        else:  # centres (FC, BC, TC, ...) and anything unnamed go to both sides
            rows[:, i] = c
    total = rows.sum(axis=1).max()
    return rows / total if total > 1 else rows


def to_stereo(x: np.ndarray, names: tuple[str, ...] | None = None) -> np.ndarray:
    """Mono is duplicated; stereo passes; more channels are downmixed by their names
    (from the frame's layout, or FFmpeg's default order for that count)."""
    channels = x.shape[0]
    if channels == 2:
        return x
    if channels == 1:
        return np.repeat(x, 2, axis=0)
    if names is None:
        names = DEFAULT_CHANNEL_NAMES.get(channels)
        if names is None:
            raise InvalidAudio(f"cannot make stereo from {channels} channels without a layout")
    if len(names) != channels:
        raise InvalidAudio(f"{channels} channels but {len(names)} channel names")
    return (downmix_matrix(tuple(names)) @ x).astype(np.float32, copy=False)


def array_to_frame(x: np.ndarray, fmt: str = "s16", sample_rate: int = SAMPLE_RATE,
                   pts: int | None = None) -> av.AudioFrame:
    """float32 ``(channels, samples)`` -> a PyAV frame of any sample format.

    Integer formats are clipped and rounded (never wrapped); NaN/inf become 0.
    """
    base = fmt[:-1] if fmt.endswith("p") else fmt
    planar = fmt.endswith("p")
    channels, _ = x.shape
    x, _ = sanitize(np.asarray(x, dtype=np.float32))
    if base in _FLOAT_FORMATS:
        data = x.astype(np.float32 if base == "flt" else np.float64)
    elif base == "s16":
        data, _ = float_to_s16(x)
    elif base == "s32":
        data = np.rint(np.clip(x.astype(np.float64) * 2147483648.0, -2147483648.0,
                               2147483647.0)).astype(np.int32)
    elif base == "u8":
        data = (np.rint(np.clip(x * 128.0, -128, 127)) + 128).astype(np.uint8)
    else:
        raise InvalidAudio(f"unsupported audio sample format {fmt!r}")
    if not x.shape[1]:
        raise InvalidAudio("an audio frame needs at least one sample")
    layout = LAYOUT_NAMES.get(channels)
    if layout is None:
        raise InvalidAudio(f"no standard layout for {channels} channels")
    if planar and channels >= 8:
        # PyAV cannot fill 8+ planes from numpy: build packed, let swresample split it.
        packed = array_to_frame(x, base, sample_rate, pts)
        return av.AudioResampler(format=fmt, layout=layout, rate=sample_rate).resample(packed)[0]
    frame = av.AudioFrame.from_ndarray(data if planar else interleave(data),  # type: ignore[arg-type]
                                       format=fmt, layout=layout)
    frame.sample_rate = sample_rate
    frame.time_base = Fraction(1, sample_rate)
    if pts is not None:
        frame.pts = pts
    return frame


def audio_level_dbov(frame: av.AudioFrame) -> int:
    """The RTP audio-level header value (RFC 6465) of an s16 frame: -127..0 dBov.

    The same figure aiortc's sender computes, in one vectorised pass (aiortc unpacks every
    sample in a Python loop: ~0.4 ms per 20 ms stereo frame, per session, on the event
    loop). Like aiortc's, the sum covers the first plane and is divided by the frame's
    samples per channel. The plane is read in place and the scalar maths is ``math``'s
    (numpy's scalar functions cost a microsecond each): ~2 us a frame."""
    pcm = np.frombuffer(memoryview(frame.planes[0]), np.int16).astype(np.float64)
    energy = float(np.dot(pcm, pcm))  # exact: a sum of squared integers below 2**53
    if energy <= 0:
        return -127
    rms = math.sqrt(energy / (frame.samples * 32767.0 * 32767.0))
    return round(min(0.0, max(-127.0, 20 * math.log10(rms))))
