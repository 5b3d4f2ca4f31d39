"""Streaming voice effects in torch: a phase-vocoder pitch shifter and a ring modulator.

Both run on blocks of any size and keep their state between blocks, so a block boundary
is inaudible: the pitch shifter overlap-adds and carries its phases and read position,
the ring modulator carries its oscillator phase, and gains move in ramps, never steps.

The pitch shifter stretches time by the pitch ratio ``r`` with a phase vocoder (analysis
hop ``hop / r``, synthesis hop ``hop``; each bin's phase advances by its measured
frequency, so a steady tone comes out as a steady tone) and reads the stretched signal
back ``r`` times faster with cubic interpolation: same duration, every frequency times
``r``. Each stretched stretch is read back at the ratio it was made with, so output keeps
pace with input exactly, and a fixed-latency FIFO turns "as much as is ready" into
"exactly one block out per block in".
"""

from __future__ import annotations

import collections
import math
from collections.abc import Callable

import torch

#: analysis/synthesis frame (samples at 48 kHz: 21 ms) and synthesis hop (8x overlap)
FRAME = 1024
HOP = 128
#: the pitch range the shifter is built for (ratios 0.5..2); its latency covers it
MAX_SEMITONES = 12.0


def wrap_phase(x: torch.Tensor) -> torch.Tensor:
    """Angles into [-pi, pi)."""
    return torch.remainder(x + math.pi, 2 * math.pi) - math.pi


def cubic_read(y: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """``y`` (channels, n) read at fractional positions ``pos`` (Catmull-Rom; ``pos`` in
    [1, n - 2))."""
    i = torch.floor(pos)
    f = (pos - i).to(y.dtype)
    i = i.long()
    p0, p1, p2, p3 = y[:, i - 1], y[:, i], y[:, i + 1], y[:, i + 2]
    return p1 + 0.5 * f * (p2 - p0 + f * (2 * p0 - 5 * p1 + 4 * p2 - p3
                                          + f * (3 * (p1 - p2) + p3 - p0)))


def per_frame(transform: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """``transform`` (a 1-D FFT) applied to each frame of ``x`` (..., n) on its own. A
    batched CPU FFT goes to a thread pool, and on a busy machine a few small transforms
    then cost 100x what they do one by one on the calling thread."""
    rows = x.reshape(-1, x.shape[-1])
    out = torch.stack([transform(row) for row in rows.unbind(0)])
    return out.reshape(*x.shape[:-1], out.shape[-1])


def nearest_peak(magnitude: torch.Tensor) -> torch.Tensor:
    """For every bin of every spectrum (``(..., bins)``), the index of the nearest local
    maximum of ``magnitude`` (the bin itself where a spectrum has none)."""
    bins = magnitude.shape[-1]
    index = torch.arange(bins, device=magnitude.device).expand_as(magnitude)
    pad = torch.full_like(magnitude[..., :1], -1.0)
    left = torch.cat([pad, magnitude[..., :-1]], dim=-1)
    right = torch.cat([magnitude[..., 1:], pad], dim=-1)
    is_peak = (magnitude > left) & (magnitude >= right)
    below = torch.cummax(torch.where(is_peak, index, -1), dim=-1).values
    above = torch.where(is_peak, index, bins).flip(-1).cummin(dim=-1).values.flip(-1)
    use_below = (below >= 0) & ((index - below <= above - index) | (above >= bins))
    nearest = torch.where(use_below, below, above)
    return torch.where(nearest >= bins, index, nearest)


class PitchShifter:
    """Shifts pitch by ``semitones`` (-12..12), one block in, one block of the same length
    out, :attr:`latency` samples later. Counts :attr:`underruns` (blocks padded with
    silence because the FIFO ran dry; never expected)."""

    def __init__(self, channels: int, device: str | torch.device = "cpu", *,
                 frame: int = FRAME, hop: int = HOP, max_semitones: float = MAX_SEMITONES):
        if frame % hop:
            raise ValueError("the frame must be a whole number of hops")
        self.channels, self.device, self.frame, self.hop = channels, device, frame, hop
        r_min = 2 ** (-max_semitones / 12)
        # worst case of what is in flight (input not yet framed, the overlap-add tail, the
        # hop granularity, the cubic read's look-ahead), read at the lowest ratio
        self.latency = math.ceil(frame + (frame / 2 + hop) / r_min)
        self.window = torch.hann_window(frame, periodic=True, dtype=torch.float32, device=device)
        norm = (self.window ** 2).reshape(frame // hop, hop).sum(0)
        self._norm = float(norm.mean())  # constant for a Hann window at this overlap
        self._omega = (2 * math.pi * torch.arange(frame // 2 + 1, device=device,
                                                  dtype=torch.float64) / frame)
        lead = frame - hop  # zeros ahead of the stream, so its first sample is fully windowed
        self._in = torch.zeros(channels, lead, device=device)
        self._in_base = -lead  # absolute input index of self._in[:, 0]
        self._pa = float(-lead)  # where the next analysis frame starts (input samples)
        self._prev_pos: int | None = None
        self._prev_phase: torch.Tensor | None = None
        self._syn_phase = torch.zeros(channels, frame // 2 + 1, device=device,
                                      dtype=torch.float64)
        self._ola = torch.zeros(channels, frame - hop, device=device)  # the overlap to come
        self._y = torch.zeros(channels, 0, device=device)  # finalized stretched samples
        self._y_base = -lead  # stretched index of self._y[:, 0]
        #: (end, ratio): finalized stretched samples up to ``end`` are read at ``ratio``
        self._regions: collections.deque[tuple[int, float]] = collections.deque()
        self._py = 0.0  # read position (stretched samples)
        self._fifo = torch.zeros(channels, self.latency, device=device)
        self.underruns = 0

    def process(self, x: torch.Tensor, semitones: float) -> torch.Tensor:
        """``x`` (channels, n) float32 -> (channels, n), ``semitones`` for this block."""
        r = 2 ** (float(semitones) / 12)
        self._in = torch.cat([self._in, x.to(self.device, torch.float32)], dim=1)
        positions = self._frame_positions(r)
        if positions:
            self._synthesize(positions, r)
        out = self._read()
        self._fifo = torch.cat([self._fifo, out], dim=1)
        n = x.shape[1]
        if self._fifo.shape[1] < n:  # cannot happen within the designed range; counted
            self.underruns += 1
            pad = torch.zeros(self.channels, n - self._fifo.shape[1], device=self.device)
            self._fifo = torch.cat([pad, self._fifo], dim=1)
        block, self._fifo = self._fifo[:, :n], self._fifo[:, n:]
        return block

    def _frame_positions(self, r: float) -> list[int]:
        """Start indices of every analysis frame the input now covers (hop ``hop / r``)."""
        end = self._in_base + self._in.shape[1]
        positions = []
        while round(self._pa) + self.frame <= end:
            positions.append(round(self._pa))
            self._pa += self.hop / r
        return positions

    def _synthesize(self, positions: list[int], r: float) -> None:
        frame, hop = self.frame, self.hop
        frames = torch.stack([self._in[:, p - self._in_base:p - self._in_base + frame]
                              for p in positions], dim=1) * self.window  # (C, F, frame)
        spectrum = per_frame(torch.fft.rfft, frames)
        magnitude = spectrum.abs()
        phase = spectrum.angle().to(torch.float64)
        prev_pos = self._prev_pos if self._prev_pos is not None else positions[0] - hop / r
        starts = torch.tensor([prev_pos] + positions, dtype=torch.float64, device=self.device)
        hops = (starts[1:] - starts[:-1]).clamp(min=1.0)  # the real analysis hop per frame
        if self._prev_phase is None:  # the stream's first frame: take its phase as it is
            self._prev_phase = phase[:, 0] - self._omega * hops[0]
            self._syn_phase = phase[:, 0] - self._omega * hop
        previous = torch.cat([self._prev_phase[:, None], phase[:, :-1]], dim=1)
        deviation = wrap_phase(phase - previous - self._omega * hops[:, None])
        advance = (self._omega + deviation / hops[:, None]) * hop  # measured frequency x hop
        # identity phase locking: a peak's phase runs on at its measured frequency and the
        # bins around it keep their analysed offsets from it, so the partials stay coherent
        # (without it a stretched tone loses level and sounds phasey)
        peaks = nearest_peak(magnitude)
        advance = advance.gather(-1, peaks)  # each bin moves as its peak does
        offset = phase - phase.gather(-1, peaks)
        syn = torch.empty_like(phase)
        last = self._syn_phase
        for j in range(phase.shape[1]):  # per frame: each one's phases start from the last's
            last = syn[:, j] = last.gather(-1, peaks[:, j]) + advance[:, j] + offset[:, j]
        self._syn_phase = wrap_phase(last)
        self._prev_phase, self._prev_pos = phase[:, -1], positions[-1]
        out = torch.polar(magnitude, syn.to(torch.float32))
        grains = per_frame(lambda s: torch.fft.irfft(s, n=frame), out) * (self.window / self._norm)
        # overlap-add: grain j's k-th hop-long piece lands on hop j + k
        count, pieces = grains.shape[1], frame // hop
        grains = grains.reshape(self.channels, count, pieces, hop)
        summed = torch.zeros(self.channels, count + pieces - 1, hop, device=self.device)
        for k in range(pieces):  # per piece of a frame (8), not per sample
            summed[:, k:k + count] += grains[:, :, k]
        summed = summed.reshape(self.channels, -1)
        summed[:, :frame - hop] += self._ola
        self._ola = summed[:, count * hop:]
        self._y = torch.cat([self._y, summed[:, :count * hop]], dim=1)
        end = self._y_base + self._y.shape[1]
        if self._regions and self._regions[-1][1] == r:
            self._regions[-1] = (end, r)
        else:
            self._regions.append((end, r))
        # the input before the next frame is done with
        drop = round(self._pa) - self._in_base
        if drop > 0:
            self._in = self._in[:, drop:]
            self._in_base += drop

    def _read(self) -> torch.Tensor:
        """Every output sample the finalized stretched signal allows, each stretch read at
        the ratio it was made with."""
        limit = self._y_base + self._y.shape[1] - 2  # the cubic read looks 2 ahead
        chunks = []
        while self._regions:
            end, r = self._regions[0]
            if self._py >= end:
                self._regions.popleft()
                continue
            stop = min(end, limit)
            if self._py >= stop:
                break
            count = math.ceil((stop - self._py) / r)
            chunks.append(self._py + r * torch.arange(count, dtype=torch.float64,
                                                       device=self.device))
            self._py += r * count
        if not chunks:
            return torch.zeros(self.channels, 0, device=self.device)
        pos = torch.cat(chunks) - self._y_base
        out = cubic_read(self._y, pos)
        keep = math.floor(self._py) - 1 - self._y_base  # what the next read may still need
        if keep > 0:
            self._y = self._y[:, keep:]
            self._y_base += keep
        return out


class RingModulator:
    """Multiplies by a sine at ``frequency`` Hz (0: off), its phase carried across blocks
    and the switch between on and off ramped over a block."""

    def __init__(self, sample_rate: int, device: str | torch.device = "cpu"):
        self.sample_rate, self.device = sample_rate, device
        self._phase = 0.0
        self._depth = 0.0  # 0: bypass, 1: fully modulated

    def process(self, x: torch.Tensor, frequency: float) -> torch.Tensor:
        n = x.shape[1]
        step = 2 * math.pi * float(frequency) / self.sample_rate
        k = torch.arange(1, n + 1, device=self.device, dtype=torch.float64)
        carrier = torch.sin(self._phase + step * k).to(x.dtype)
        self._phase = (self._phase + step * n) % (2 * math.pi)
        target = 1.0 if frequency > 0 else 0.0
        depth = ramp(self._depth, target, n, self.device).to(x.dtype)
        self._depth = target
        return x * (1 - depth + depth * carrier)


def ramp(start: float, end: float, n: int, device: str | torch.device) -> torch.Tensor:
    """``n`` gains moving linearly from ``start`` (exclusive) to ``end`` (inclusive)."""
    if start == end:
        return torch.full((n,), end, device=device, dtype=torch.float64)
    return start + (end - start) * torch.arange(1, n + 1, device=device,
                                                dtype=torch.float64) / n


class DelayLine:
    """A fixed delay of ``samples`` (the dry path, aligned with the shifter's output)."""

    def __init__(self, channels: int, samples: int, device: str | torch.device = "cpu"):
        self._buffer = torch.zeros(channels, samples, device=device)

    def process(self, x: torch.Tensor) -> torch.Tensor:
        joined = torch.cat([self._buffer, x], dim=1)
        out, self._buffer = joined[:, :x.shape[1]], joined[:, x.shape[1]:]
        return out


class VoiceChain:
    """Pitch shift, then ring modulation, mixed with the dry input delayed to match: the
    whole ``voice-fx`` effect on mono blocks, with every parameter change ramped or
    phase-continuous."""

    def __init__(self, sample_rate: int, device: str | torch.device = "cpu"):
        self.shifter = PitchShifter(1, device)
        self.ring = RingModulator(sample_rate, device)
        self.dry = DelayLine(1, self.shifter.latency, device)
        self.device = device
        self._mix = 1.0

    @property
    def latency(self) -> int:
        return self.shifter.latency

    def process(self, x: torch.Tensor, pitch: float, ring: float, mix: float) -> torch.Tensor:
        """``x`` (1, n) -> (1, n)."""
        wet = self.ring.process(self.shifter.process(x, pitch), ring)
        dry = self.dry.process(x)
        amount = ramp(self._mix, float(mix), x.shape[1], self.device).to(x.dtype)
        self._mix = float(mix)
        return dry + amount * (wet - dry)
