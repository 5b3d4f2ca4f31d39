"""One session's output media on one media clock, shared by audio and video.

The runner thread writes chunks stamped in media seconds; the two output tracks read
them and release each frame at ``epoch + media_time + stall + playout_delay``. One epoch,
one delay and one ``stall`` per session, so:

* an underflow (audio not there in time) plays silence and *stalls* the clock: ``stall``
  grows by the gap, video frames release that much later too, and sync is kept; but
  where chunks came with video and no audio (a pipeline that makes audio only
  sometimes), the missing audio is silence by content and the clock runs on;
* an overflow (more media ahead than ``max_buffer``) skips the oldest media on both
  tracks by the same amount (``stall`` shrinks), counted;
* a pause (:meth:`MediaBuffer.hold`, called the moment the ``paused`` update arrives) stops
  the clock at once: the audio track plays silence and ``stall`` grows with it, no video
  frame is released (the picture holds), and what was buffered waits (a bursty generator's
  two seconds do not play on). It is counted as ``paused_ms``, not as underruns.
  :meth:`MediaBuffer.resume` lets the clock run on from where it stopped, with the buffered
  media first: nothing to catch up, no burst, no gap;
* a sender that falls behind (the audio track sending past its release time by more than
  ``SENDER_LAG_TOLERANCE``) stalls the clock to now, counted as ``sender_lag_ms``, and
  the lead is counted from what the audio track has taken, so the runner generates only
  what can be sent; a video sender behind the audio clock skips to its newest due frame
  (``skipped_video_frames``), and video is never held beyond ``max_buffer``.

Invariant: the audio track's output position (its RTP time, in samples) is always
``audio_head + stall``. Video pts use the same mapping, so RTP time and release time agree
on both tracks, which is what the browser's lip sync needs.
"""

from __future__ import annotations

import asyncio
import collections
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from scope_relay.media.ring import IndexedAudioRing
from scope_relay.protocol.media import CHANNELS, SAMPLE_RATE
from scope_relay.util.counters import Counters, samples_counter

#: The audio track sending this much past its frame's release time has fallen behind
#: (a starved event loop or encoder): the clock stalls to now (see :meth:`catch_up_audio`).
#: Less is scheduling jitter, which the receiver's jitter buffer absorbs.
SENDER_LAG_TOLERANCE = 0.1


@dataclass(slots=True)
class BufferCounts(Counters):
    """What one session's media clock stalled, skipped, dropped and paused."""

    chunks: int = 0
    underruns: int = 0
    stalled_samples: int = samples_counter(SAMPLE_RATE)
    skipped_samples: int = samples_counter(SAMPLE_RATE)
    dropped_video_frames: int = 0
    skipped_video_frames: int = 0  # the video sender fell behind the audio clock
    #: the clock stalled because the audio sender was late
    sender_lag_samples: int = samples_counter(SAMPLE_RATE)
    sender_lags: int = 0
    absent_audio_samples: int = samples_counter(SAMPLE_RATE)  # chunks that came without audio
    paused_samples: int = samples_counter(SAMPLE_RATE)

class MediaBuffer:
    def __init__(self, loop: asyncio.AbstractEventLoop, *, playout_delay: float = 0.1,
                 max_buffer: float = 6.0, audio_clocked: bool = True,
                 release_when_ready: bool = False,
                 clock: Callable[[], float] = time.monotonic):
        self.loop = loop
        self.playout_delay = playout_delay
        self.max_buffer = max_buffer
        self.audio_clocked = audio_clocked
        #: video goes out the moment it is made, its pts still on the media clock: a
        #: camera-driven chain without audio is paced by the camera and has nothing to
        #: line up with, so any wait would only add latency
        self.release_when_ready = release_when_ready
        self.clock = clock
        self._lock = threading.Lock()
        #: the audio not yet played; its ``start`` is the media sample index playing next
        self._audio = IndexedAudioRing(CHANNELS, int((max_buffer + 4.0) * SAMPLE_RATE))
        self._silent_until = 0  # media sample index up to which chunks came without audio
        self._video: collections.deque[tuple[float, np.ndarray]] = collections.deque()
        self._video_end = 0.0
        self.epoch: float | None = None
        self.stall = 0  # samples
        self.started = asyncio.Event()
        self._video_event = asyncio.Event()
        self.closed = False
        self.counts = BufferCounts()
        #: the audio track has taken its first frame (its sender is running)
        self.audio_taken = False
        #: paused (see :meth:`hold`) until :meth:`resume`
        self.holding = False
        self._held_since: float | None = None  # clock time the (video-only) clock stopped

    # --- clock -------------------------------------------------------------------------
    @property
    def audio_head(self) -> int:
        """Media sample index of the next audio sample to play."""
        return self._audio.start

    @property
    def audio_buffered(self) -> int:
        """Audio samples buffered ahead of the head."""
        return len(self._audio)

    def release_time(self, media_seconds: float) -> float:
        assert self.epoch is not None
        return self.epoch + media_seconds + self.stall / SAMPLE_RATE + self.playout_delay

    def output_seconds(self, media_seconds: float) -> float:
        """Where ``media_seconds`` lands on the output (RTP) timeline."""
        return media_seconds + self.stall / SAMPLE_RATE

    def media_now(self) -> float:
        if self.epoch is None:
            return 0.0
        return self.clock() - self.epoch - self.playout_delay - self.stall / SAMPLE_RATE

    def lead(self) -> float:
        """Seconds of media buffered ahead of what is playing now: of what the audio
        track has taken, when it is behind the clock, so a sender that cannot keep up holds
        the runner back instead of having media generated that only piles up."""
        with self._lock:
            end = max(self._video_end, self._audio.end / SAMPLE_RATE)
            if self.epoch is None:
                return end
            played = self.media_now()
            if self.audio_clocked and self.audio_taken:  # (before, nothing can be behind)
                played = min(played, self.audio_head / SAMPLE_RATE)
            return end - max(played, 0.0)

    # --- writer (runner thread) --------------------------------------------------------
    def push(self, video: list[tuple[float, np.ndarray]], audio: np.ndarray | None,
             frame_seconds: float = 0.0, audio_start: int | None = None) -> None:
        """Add a chunk. ``audio_start`` is the media sample index of ``audio[:, 0]``
        (default: right after what is buffered); audio is placed there, silence filling a
        gap and anything already played being trimmed."""
        with self._lock:
            if self.closed:
                return
            if audio is not None and audio.shape[1] and self.audio_clocked:
                self._write_audio(audio, audio_start)  # (no audio track: nobody to play it)
            for item in video:
                self._video.append(item)
                self._video_end = max(self._video_end, item[0] + frame_seconds)
            self._trim_video()
            if video and (audio is None or not audio.shape[1]):
                # a chunk without audio: its span is silent by content, not late
                self._silent_until = max(self._silent_until,
                                         round(self._video_end * SAMPLE_RATE))
            self.counts.chunks += 1
            first = self.epoch is None
            if first:
                start = min([t for t, _ in video] + [self.audio_head / SAMPLE_RATE])
                self.epoch = self.clock() - max(start, 0.0)
            self._skip_overflow()
        self.loop.call_soon_threadsafe(self._wake, first)

    def hold(self) -> None:
        """Pause now: the clock stops where it is (silence, held picture, counted as
        paused) and the buffered media waits for :meth:`resume`."""
        with self._lock:
            if not self.holding:
                self.holding = True
                self._held_since = self.clock()

    def resume(self) -> None:
        """End a pause: the clock runs on from where it stopped. An audio-clocked clock
        was held frame by frame (:meth:`take_audio`); a video-only one is moved on here by
        the time it was held."""
        with self._lock:
            if not self.holding:
                return
            self.holding = False
            if not self.audio_clocked and self.epoch is not None and self._held_since is not None:
                held = int(round((self.clock() - self._held_since) * SAMPLE_RATE))
                self.stall += held
                self.counts.paused_samples += held
            self._held_since = None
        self.loop.call_soon_threadsafe(self._video_event.set)

    def _write_audio(self, audio: np.ndarray, start: int | None) -> None:
        # silence fills a gap, what was already played is trimmed, and the oldest samples
        # go when the ring is full: the media the head moved past unplayed is skipped
        if start is None:
            self._skipped(self._audio.append(audio))
        else:
            self._skipped(self._audio.write_at(start, audio).dropped)

    def _skipped(self, samples: int) -> None:
        """The media position moved on without the output (RTP) position: count it."""
        self.stall -= samples
        self.counts.skipped_samples += samples

    def _skip_overflow(self) -> None:
        end = max(self._video_end, self._audio.end / SAMPLE_RATE)
        excess = end - max(self.media_now(), 0.0) - self.max_buffer
        if excess <= 0:
            return
        skip = int(round(excess * SAMPLE_RATE))
        self._audio.advance(skip)
        self._skipped(skip)
        now = self.media_now()
        while self._video and self._video[0][0] < now:
            self._video.popleft()
            self.counts.dropped_video_frames += 1

    def _wake(self, first: bool) -> None:
        if first:
            self.started.set()
        self._video_event.set()

    # --- readers (event loop) ----------------------------------------------------------
    def take_audio(self, n: int) -> np.ndarray:
        """The next ``n`` samples; what is missing is silence and stalls the clock."""
        with self._lock:
            self.audio_taken = True
            if self.holding:  # paused: silence, and the clock holds with it
                self.stall += n
                self.counts.paused_samples += n
                return np.zeros((CHANNELS, n), np.float32)
            got = min(n, len(self._audio))
            out = self._audio.read(got)
            if got < n:
                out = np.concatenate([out, np.zeros((CHANNELS, n - got), np.float32)], axis=1)
                # silence by content (chunks that came without audio): the clock runs on
                absent = min(n - got, max(0, self._silent_until - self.audio_head))
                self._audio.advance(absent)
                self.counts.absent_audio_samples += absent
                late = n - got - absent
                if late:  # the producer is late: hold both tracks (sync survives)
                    self.counts.underruns += 1
                    self.stall += late
                    self.counts.stalled_samples += late
            return out

    def audio_output_samples(self) -> int:
        return self.audio_head + self.stall

    def pop_video(self) -> tuple[float, np.ndarray] | None:
        """The next frame to send. With audio clocking the session, frames whose
        successor is already due are skipped (counted): a video sender that fell behind
        catches up with the audio instead of drifting later and later."""
        with self._lock:
            self._video_event.clear()
            if self.holding:  # paused: the picture holds
                return None
            if self.audio_clocked and self.epoch is not None:
                now = self.clock()
                while len(self._video) > 1 and self.release_time(self._video[1][0]) <= now:
                    self._video.popleft()
                    self.counts.skipped_video_frames += 1
            return self._video.popleft() if self._video else None

    def video_queued(self) -> int:
        """Video frames waiting to be sent."""
        with self._lock:
            return len(self._video)

    def _trim_video(self) -> None:
        """Never hold more than ``max_buffer`` of video, whether or not anything is
        buffered ahead (a video track that stopped taking frames): drop the oldest."""
        while self._video and self._video[-1][0] - self._video[0][0] > self.max_buffer:
            self._video.popleft()
            self.counts.dropped_video_frames += 1

    def catch_up_audio(self, early: float = 0.0) -> None:
        """The audio track is about to send its next frame (``early`` s before its
        release time, by design). If it is more than ``SENDER_LAG_TOLERANCE`` past that,
        the sender fell behind: stall the clock to now, as an underflow does. The frame
        goes out on time with its content intact (its RTP time jumps: the receiver hears
        a gap), video is released that much later too, and the runner is not asked for
        media that nobody can send."""
        with self._lock:
            if self.epoch is None:
                return
            due = self.epoch + (self.audio_head + self.stall) / SAMPLE_RATE + self.playout_delay
            late = self.clock() - (due - early)
            if late > SENDER_LAG_TOLERANCE:
                samples = int(round(late * SAMPLE_RATE))
                self.stall += samples
                self.counts.sender_lag_samples += samples
                self.counts.sender_lags += 1

    async def wait_video(self, timeout: float) -> None:
        try:
            await asyncio.wait_for(self._video_event.wait(), timeout)
        except TimeoutError:
            pass

    def stall_for(self, seconds: float) -> None:
        """Shift the clock later (video-only sessions whose frames arrive late)."""
        with self._lock:
            samples = int(round(seconds * SAMPLE_RATE))
            self.stall += samples
            self.counts.stalled_samples += samples

    def close(self) -> None:
        with self._lock:
            self.closed = True
            self._video.clear()
            self._audio.clear()
        self.loop.call_soon_threadsafe(self._video_event.set)
        self.loop.call_soon_threadsafe(self.started.set)  # tracks waiting for media see closed

    def stats(self) -> dict[str, float | int | bool]:
        return {
            "playout_delay_ms": self.playout_delay * 1000,
            "buffered_ms": round(self.lead() * 1000, 1) if self.epoch is not None else 0.0,
            "video_queue_frames": len(self._video),
            "paused": self.holding,
            **self.counts.as_stats(),
        }
