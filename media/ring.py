"""Audio rings: a fixed-capacity FIFO, and the same FIFO placed on an absolute sample index.

Both sides keep audio on a timeline of 48 kHz sample indices (the cloud's media clock,
the relay's copy of it). :class:`IndexedAudioRing` is the one place that knows where the
buffered audio sits on that timeline: writes land at their index (silence fills a gap,
what was already passed is trimmed), overflow drops the oldest samples, and every sample
the head moves past without being read is returned to the caller to count.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from scope_relay.protocol.media import CHANNELS, SAMPLE_RATE


class AudioRing:
    """Fixed-capacity FIFO of ``(channels, samples)`` audio.

    Writing past capacity drops the *oldest* samples and counts them (the caller decides
    whether that is an overflow to report); reads never allocate more than they return.
    """

    def __init__(self, channels: int = CHANNELS, capacity: int = SAMPLE_RATE * 10,
                 dtype: type = np.float32):
        self.channels = channels
        self.capacity = capacity
        self.dtype = np.dtype(dtype)
        self._buf = np.zeros((channels, capacity), dtype=self.dtype)
        self._start = 0  # read position in _buf
        self._size = 0
        self.dropped_samples = 0

    def __len__(self) -> int:
        return self._size

    def write(self, x: np.ndarray) -> int:
        """Append ``x``; returns how many of the oldest samples were dropped to make room."""
        n = x.shape[1]
        if n == 0:
            return 0
        if x.shape[0] != self.channels:
            raise ValueError(f"ring holds {self.channels} channels, got {x.shape[0]}")
        dropped = 0
        if n >= self.capacity:
            dropped = self._size + n - self.capacity
            x = x[:, n - self.capacity:]
            n = self.capacity
            self._start, self._size = 0, 0
        elif self._size + n > self.capacity:
            dropped = self._size + n - self.capacity
            self.discard(dropped)
        end = (self._start + self._size) % self.capacity
        first = min(n, self.capacity - end)
        self._buf[:, end:end + first] = x[:, :first]
        if first < n:
            self._buf[:, :n - first] = x[:, first:]
        self._size += n
        self.dropped_samples += dropped
        return dropped

    def read(self, n: int) -> np.ndarray:
        """Remove and return the next ``n`` samples (``n`` <= ``len(self)``)."""
        if n > self._size:
            raise ValueError(f"asked for {n} samples, {self._size} buffered")
        out = np.empty((self.channels, n), dtype=self.dtype)
        first = min(n, self.capacity - self._start)
        out[:, :first] = self._buf[:, self._start:self._start + first]
        if first < n:
            out[:, first:] = self._buf[:, :n - first]
        self.discard(n)
        return out

    def discard(self, n: int) -> int:
        """Drop up to ``n`` of the oldest samples; returns how many were buffered."""
        n = min(n, self._size)
        self._start = (self._start + n) % self.capacity
        self._size -= n
        return n

    def clear(self) -> None:
        self._start, self._size = 0, 0


@dataclass(frozen=True)
class Placement:
    """What :meth:`IndexedAudioRing.write_at` did to fit a write onto the timeline."""

    #: silent samples inserted before the write (a gap in the stream)
    gap: int = 0
    #: samples cut from the write's start (they were already buffered or passed)
    trimmed: int = 0
    #: positions the head moved past unread (overflow, or a gap longer than the ring)
    dropped: int = 0


class IndexedAudioRing:
    """An :class:`AudioRing` whose head sits at an absolute sample index, ``start``.

    ``start`` only moves forward: by reads, by :meth:`advance`, by overflow, and by
    :meth:`reset` to a new timeline. ``end`` is where the next contiguous write goes.
    """

    def __init__(self, channels: int = CHANNELS, capacity: int = SAMPLE_RATE * 10,
                 dtype: type = np.float32, start: int = 0):
        self._ring = AudioRing(channels, capacity, dtype)
        self.start = start

    def __len__(self) -> int:
        return len(self._ring)

    @property
    def capacity(self) -> int:
        return self._ring.capacity

    @property
    def end(self) -> int:
        return self.start + len(self._ring)

    def write_at(self, index: int, x: np.ndarray) -> Placement:
        """Place ``x`` so that ``x[:, 0]`` lands on sample ``index``."""
        gap = trimmed = dropped = 0
        end = self.end
        if index > end:
            gap = index - end
            dropped += self._write_silence(gap)
        elif index < end:
            trimmed = min(end - index, x.shape[1])
            x = x[:, trimmed:]
        dropped += self._write(x)
        return Placement(gap, trimmed, dropped)

    def append(self, x: np.ndarray) -> int:
        """Write at ``end``; returns the samples dropped (oldest first) to make room."""
        return self._write(x)

    def read(self, n: int) -> np.ndarray:
        out = self._ring.read(n)
        self.start += n
        return out

    def advance(self, n: int) -> int:
        """Move the head ``n`` samples on, buffered or not; returns how many were buffered."""
        buffered = self._ring.discard(n)
        self.start += n
        return buffered

    def discard_before(self, index: int) -> int:
        """Drop buffered samples before ``index``; returns how many."""
        if index <= self.start:
            return 0
        dropped = self._ring.discard(index - self.start)
        self.start += dropped
        return dropped

    def clear(self) -> int:
        """Drop everything buffered (the head moves to ``end``); returns how much."""
        return self.advance(len(self._ring))

    def reset(self, start: int) -> int:
        """Start a new timeline at ``start``; returns the samples thrown away."""
        thrown = len(self._ring)
        self._ring.clear()
        self.start = start
        return thrown

    def _write(self, x: np.ndarray) -> int:
        dropped = self._ring.write(x)
        self.start += dropped
        return dropped

    def _write_silence(self, n: int) -> int:
        capacity = self._ring.capacity
        if n < capacity:
            return self._write(np.zeros((self._ring.channels, n), self._ring.dtype))
        # more silence than the ring holds: the head jumps to where the kept part begins
        dropped = len(self._ring) + n - capacity
        self._ring.clear()
        self.start += dropped
        self._ring.write(np.zeros((self._ring.channels, capacity), self._ring.dtype))
        return dropped
