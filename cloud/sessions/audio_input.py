"""Input audio (the microphone) on its way into a pipeline: timed, resampled, bounded.

A received track's frames are turned into 48 kHz float32 chunks stamped on the session's
media clock, the way camera frames are (anchored at the clock's "now" when the first one
arrives, then following the track's own timestamps), and queued for the runner's worker
thread. The queue holds a bounded span of audio: a pipeline that falls behind sees the
newest audio and the oldest is dropped and counted, so input never piles up into latency.
"""

from __future__ import annotations

import collections
import threading

import av
import numpy as np

from scope_relay.cloud.pipelines.base import InputAudio
from scope_relay.media.audio import frame_channel_names, frame_to_array
from scope_relay.media.resample import TimedResampler
from scope_relay.protocol.media import SAMPLE_RATE

#: Input audio kept for a pipeline that has not taken it yet (seconds); older is dropped.
MAX_INPUT_AUDIO_SECONDS = 0.5


class AudioInputQueue:
    """Bounded, thread-safe queue of input audio chunks (drops the oldest, counted).

    ``cond`` may be shared with the camera's queue, so a pipeline that takes both wakes
    for whichever arrives first.
    """

    def __init__(self, max_seconds: float = MAX_INPUT_AUDIO_SECONDS,
                 cond: threading.Condition | None = None):
        self._chunks: collections.deque[InputAudio] = collections.deque()
        self._samples = 0
        self._max_samples = round(max_seconds * SAMPLE_RATE)
        self._cond = cond or threading.Condition()
        self.dropped_chunks = 0
        self.dropped_samples = 0

    def put(self, chunk: InputAudio) -> None:
        with self._cond:
            self._chunks.append(chunk)
            self._samples += chunk.samples.shape[1]
            while self._samples > self._max_samples and len(self._chunks) > 1:
                old = self._chunks.popleft()
                self._samples -= old.samples.shape[1]
                self.dropped_chunks += 1
                self.dropped_samples += old.samples.shape[1]
            self._cond.notify_all()

    def take_all(self, timeout: float = 0.0) -> list[InputAudio]:
        """Every queued chunk, waiting up to ``timeout`` s for one when there is none."""
        with self._cond:
            if not self._chunks and timeout > 0:
                self._cond.wait(timeout)
            chunks = list(self._chunks)
            self._chunks.clear()
            self._samples = 0
            return chunks

    def __len__(self) -> int:
        return len(self._chunks)

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()


class InputAudioTimeline:
    """One received audio track's frames -> 48 kHz chunks on the media clock.

    Any format, layout or rate is accepted (one streaming resampler per track, its blocks
    laid end to end, so resampling adds no clicks); the output is stereo, as everything
    inside both apps is.
    """

    def __init__(self) -> None:
        self._resampler = TimedResampler()
        self._first: float | None = None
        self._base = 0.0

    @property
    def nonfinite_samples(self) -> int:
        return self._resampler.resampler.nonfinite_samples

    def place(self, frame: av.AudioFrame, media_now: float) -> InputAudio | None:
        """The frame as a chunk stamped on the media clock (``media_now``: the clock's
        current time, used to anchor the first frame); ``None`` while the resampler
        has nothing to give yet."""
        t = float(frame.time) if frame.time is not None else 0.0
        if self._first is None:
            self._first, self._base = t, max(media_now, 0.0)
        media_time = self._base + t - self._first
        names = frame_channel_names(frame) if frame.layout.nb_channels > 2 else None
        integer = frame.format.name.rstrip("p") in ("s16", "s32", "u8")
        out, index = self._resampler.process(frame_to_array(frame), frame.sample_rate,
                                             round(media_time * SAMPLE_RATE), names,
                                             finite=integer)
        if not out.shape[1]:
            return None
        # (a copy: at 48 kHz the resampler may hand back a view of the frame's buffer)
        return InputAudio(np.array(out, dtype=np.float32, order="C"), SAMPLE_RATE,
                          index / SAMPLE_RATE)
