"""Measurements a pipeline test asserts on: pitch, loudness, colour."""

from __future__ import annotations

import numpy as np

from scope_relay.protocol.media import SAMPLE_RATE


def _as_float(x: np.ndarray) -> np.ndarray:
    """int16 PCM scaled to [-1, 1); float passed through as float64."""
    if np.issubdtype(x.dtype, np.integer):
        return x.astype(np.float64) / 32768.0
    return x.astype(np.float64)


def dominant_frequency(x: np.ndarray, rate: int = SAMPLE_RATE) -> float:
    """Frequency (Hz) of the strongest spectral peak of a mono 1-D signal ``x`` (int16 PCM
    or float) sampled at ``rate`` Hz (default 48 kHz: what :class:`Receiver` delivers; pass
    your own rate for anything else), refined by parabolic interpolation on the log
    spectrum (well under 1% error on a tone of 0.25 s or more). Where the three bins round
    the peak have no curvature the refinement would divide by zero: the bin itself is used."""
    if x.ndim != 1 or len(x) < 3:
        raise ValueError("dominant_frequency needs a mono signal of 3 samples or more")
    windowed = _as_float(x) * np.hanning(len(x))
    spectrum = np.abs(np.fft.rfft(windowed))
    k = float(np.argmax(spectrum[1:]) + 1)
    i = int(k)
    if 1 <= i < len(spectrum) - 1:
        a, b, c = np.log(spectrum[i - 1:i + 2] + 1e-12)
        denom = a - 2 * b + c
        if denom:
            k = i + 0.5 * (a - c) / denom
    return k * rate / len(x)


def rms(x: np.ndarray) -> float:
    """Root mean square, in full scale (int16 PCM is scaled so that 1.0 is full scale)."""
    if x.size == 0:
        return 0.0
    return float(np.sqrt(np.mean(_as_float(x) ** 2)))


def mean_colour(frames: np.ndarray | list[np.ndarray]) -> np.ndarray:
    """Mean RGB (0-255, float) over one ``(H, W, 3)`` frame or a list/stack of them."""
    stack = np.asarray(frames, dtype=np.float64) if isinstance(frames, list) else frames
    return np.asarray(stack, dtype=np.float64).reshape(-1, 3).mean(axis=0)
