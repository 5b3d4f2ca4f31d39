"""Streaming audio: a stateful resampler, its timed placement, and a 20 ms framer.

Shared by the cloud's output tracks and the relay's audio path so both follow the same
rules: one resampler per stream (libsoxr, stateful, rebuilt when the rate changes),
NaN/inf cleaned *before* the filter, and framing from a fixed ring, never by
concatenating the whole buffer per frame.
"""

from __future__ import annotations

import av
import numpy as np
import soxr

from scope_relay.protocol.media import CHANNELS, FRAME_SAMPLES, SAMPLE_RATE

from .audio import frame_channel_names, frame_to_array, sanitize, to_stereo
from .ring import AudioRing


class StreamResampler:
    """One stateful resampler for one audio stream, any rate/channel count -> 48 kHz stereo.

    At 48 kHz input no filter runs (bit-exact passthrough). When the input rate changes
    mid-stream, the old filter is flushed (its tail is returned, so nothing is lost) and
    a new one starts.
    """

    def __init__(self, out_rate: int = SAMPLE_RATE, quality: str = "HQ"):
        self.out_rate = out_rate
        self.quality = quality
        self.in_rate: int | None = None
        self._stream: soxr.ResampleStream | None = None
        self.nonfinite_samples = 0
        self.rebuilds = 0
        self.samples_in = 0
        self.samples_out = 0

    def process(self, x: np.ndarray, in_rate: int,
                channel_names: tuple[str, ...] | None = None, *, finite: bool = False) -> np.ndarray:
        """Resample ``(channels, samples)`` float32 audio; returns stereo at ``out_rate``.

        Any channel count works (mono duplicated, surround downmixed by ``channel_names``).
        ``finite=True`` skips the NaN/inf scan for audio that cannot hold them (from integers).
        """
        if not isinstance(in_rate, (int, np.integer)) or in_rate <= 0:
            raise ValueError(f"sample rate must be a positive integer, got {in_rate!r}")
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 2:
            raise ValueError(f"audio must be (channels, samples), got shape {x.shape}")
        if not finite:
            x, bad = sanitize(x)
            self.nonfinite_samples += bad
        x = to_stereo(x, channel_names)
        tail = None
        if in_rate != self.in_rate:
            if self.in_rate is not None:
                tail = self.flush()
                self.rebuilds += 1
            self.in_rate = in_rate
            self._stream = None if in_rate == self.out_rate else soxr.ResampleStream(
                in_rate, self.out_rate, CHANNELS, dtype="float32", quality=self.quality)
        self.samples_in += x.shape[1]
        if self._stream is None:
            out = x
        else:  # soxr wants (frames, channels): packed input is already that, no copy
            out = self._stream.resample_chunk(np.ascontiguousarray(x.T), last=False).T
        if tail is not None and tail.shape[1]:
            out = np.concatenate([tail, out], axis=1)
        self.samples_out += out.shape[1]
        return out

    def flush(self) -> np.ndarray:
        """Drain the filter (end of stream or before a rate change)."""
        if self._stream is None:
            return np.zeros((CHANNELS, 0), dtype=np.float32)
        y = self._stream.resample_chunk(np.zeros((0, CHANNELS), dtype=np.float32), last=True)
        self._stream = None
        self.in_rate = None
        return y.T


class AudioFramer:
    """Cuts a stream of arbitrary-sized chunks at any rate into 20 ms 48 kHz stereo frames."""

    def __init__(self, capacity_seconds: float = 10.0, quality: str = "HQ"):
        self.resampler = StreamResampler(quality=quality)
        self.ring = AudioRing(CHANNELS, int(capacity_seconds * SAMPLE_RATE))

    def push(self, x: np.ndarray, in_rate: int,
             channel_names: tuple[str, ...] | None = None, *, finite: bool = False) -> int:
        """Add audio; returns samples dropped (oldest first) because the ring was full."""
        return self.ring.write(self.resampler.process(x, in_rate, channel_names, finite=finite))

    def push_frame(self, frame: av.AudioFrame) -> int:
        """Add a PyAV frame of any format, layout and rate."""
        names = frame_channel_names(frame) if frame.layout.nb_channels > 2 else None
        integer = frame.format.name.rstrip("p") in ("s16", "s32", "u8")
        return self.push(frame_to_array(frame), frame.sample_rate, names, finite=integer)

    def pop_frame(self, samples: int = FRAME_SAMPLES) -> np.ndarray | None:
        if len(self.ring) < samples:
            return None
        return self.ring.read(samples)

    def buffered_seconds(self) -> float:
        return len(self.ring) / SAMPLE_RATE


class TimedResampler:
    """A :class:`StreamResampler` whose output is placed on a 48 kHz sample timeline.

    The filter returns uneven blocks that lag their input, so a block's time cannot be
    read off its input's; blocks are laid end to end from an anchor instead. The anchor is
    set by the first block, by ``restart=True`` (a new stream: the filter's tail is
    dropped), and when the caller's ``index`` for the input is more than ``tolerance``
    samples from where the next block would go (the stream really jumped).
    """

    def __init__(self, tolerance: int = SAMPLE_RATE // 5, quality: str = "HQ"):
        self.resampler = StreamResampler(quality=quality)
        self.tolerance = tolerance
        self.next_index: int | None = None

    @property
    def anchored(self) -> bool:
        return self.next_index is not None

    def process(self, x: np.ndarray, in_rate: int, index: int | None,
                channel_names: tuple[str, ...] | None = None, *, restart: bool = False,
                finite: bool = False) -> tuple[np.ndarray, int]:
        """Resample ``x`` (whose first sample belongs at ``index``; ``None``: right after
        the previous input). Returns the stereo output and the index its first sample
        goes to."""
        if restart:
            self.resampler.flush()
            self.next_index = None
        if index is not None and (self.next_index is None
                                  or abs(index - self.next_index) > self.tolerance):
            self.next_index = index
        if self.next_index is None:
            raise ValueError("the first block of a stream needs an index")
        out = self.resampler.process(x, in_rate, channel_names, finite=finite)
        at = self.next_index
        self.next_index += out.shape[1]
        return out, at
