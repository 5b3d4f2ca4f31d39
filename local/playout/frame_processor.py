"""FrameProcessor: the relay's bounded queues, on the cloud's timeline, released on ours.

Both received tracks are first placed on the cloud's one timeline (cloud wall-clock
seconds from the sender reports, see :mod:`media_sync`), then released on the local clock
at ``cloud_time + offset + playout_delay + extra_delay``. ``offset`` is one per session:
the running minimum of ``arrival - cloud_time`` over both tracks (the fastest path the
network has shown). Nothing is re-paced per track by wall clock, so the relay keeps the
cloud's A/V alignment.

Queues are bounded in time; every drop is counted. Audio that arrives after it was read
is dropped (counted); lateness that repeats or lasts raises ``extra_delay`` for both
tracks by a bounded step (:mod:`.lateness`: a lone catch-up burst after a stall raises
nothing). When the network has calmed down (every audio frame of a whole window came with
room to spare), ``extra_delay`` is given back in small steps: both tracks are simply sent
a little earlier, the audio stays continuous, so latency never ratchets up over a session.

Loss on a hop with a round trip: the cloud hop's receive path decides each audio hole
against :meth:`FrameProcessor.hold_budget` (how long a packet may still wait and play),
and while loss persists asks for the hold a retransmission needs (:meth:`want_hold`);
``loss_room`` is added to the delay for that at once, and given back at ``ROOM_DECAY`` once
the loss has stopped.

A queue on the cloud hop (a bandwidth ceiling: the drop-tail queue fills in the ~0.1-0.5 s
before the sender's rate is cut) delays the audio with the video; the lateness policy
reacts only once audio has been lost late. So the video's delay-based estimate tells
:meth:`FrameProcessor.queue_seen` the queue it measures (one-way delay over its floor), and
``queue_room`` is raised at once by what that queue needs beyond the audio's clean slack
(at most ``MAX_QUEUE_ROOM``), and given back at ``QUEUE_ROOM_DECAY`` as the queue drains.
Like every delay term it moves both tracks, so lip sync holds.

Video is queued decoded (``av.VideoFrame``) or, when the relay forwards the cloud's
bitstream, still encoded (:class:`~scope_relay.rtc.receive_path.EncodedVideo`). Encoded
frames are skipped only where the stream stays decodable: late or overflowing, the queue
drops up to its newest keyframe; when it has none it keeps the frames and asks upstream
for one (``request_keyframe``), and after a gap it takes nothing before the next keyframe.
"""

from __future__ import annotations

import asyncio
import collections
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import av
import numpy as np

from scope_relay.local.playout.lateness import LatenessPolicy
from scope_relay.media.ring import IndexedAudioRing
from scope_relay.protocol.media import CHANNELS, OPUS_LOOKAHEAD_SECONDS, SAMPLE_RATE
from scope_relay.rtc.receive_path import EncodedVideo
from scope_relay.util.counters import Counters, samples_counter

#: what the video queue holds: a decoded frame, or an encoded one being forwarded
VideoItem = av.VideoFrame | EncodedVideo
#: a forwarded queue this far behind with no keyframe to skip to asks upstream for one
KEYFRAME_WANTED_LAG = 0.2


def is_key(item: VideoItem) -> bool:
    """Whether playback may start (or resume after a skip) at ``item``."""
    return not isinstance(item, EncodedVideo) or item.keyframe

#: Outgoing pts start this far before the first cloud time seen, so they stay positive.
PTS_HEADROOM = 1.0
#: Lateness up to this is network jitter (the delay rises to absorb it); later audio is
#: stale (held across a reconnect) and is only dropped.
MAX_JITTER = 0.3
#: Raised delay is given back after a window in which every audio frame arrived at least
#: ``DECAY_MARGIN`` before its release time, at most ``DECAY_STEP`` per window.
#: 2 s windows of 40 ms each: 200 ms given back in 10 s of calm (a raise after a stall or
#: a loss burst is gone within ~10 s), while a window still spans ~100 audio frames, enough
#: to see the network's ordinary jitter before giving its margin away.
DECAY_WINDOW = 2.0
DECAY_MARGIN = 0.02
DECAY_STEP = 0.04
#: An audio cursor further than this behind what is due now skips forward to it
#: (counted): a relay that cannot keep up plays current audio with gaps, instead of
#: falling ever further behind until its ring overflows past the cursor and only silence
#: is left (and a burst of stale frames once the load drops).
MAX_OUTPUT_LAG = 0.2
#: the hold budget: the median slack of the last SLACK_FRAMES audio frames (time from
#: arrival to the output's read), less HOLD_MARGIN; none before MIN_SLACK_FRAMES
SLACK_FRAMES = 100
MIN_SLACK_FRAMES = 10
HOLD_MARGIN = 0.005
#: loss room: at most MAX_LOSS_ROOM; raised at once by more than ROOM_STEP, given back at
#: ROOM_DECAY seconds per second once not needed
MAX_LOSS_ROOM = 0.3
ROOM_STEP = 0.005
ROOM_DECAY = 0.02
#: queue room: at most MAX_QUEUE_ROOM; covers the measured queue + QUEUE_MARGIN (its growth
#: until the next audio frame, jitter); given back at QUEUE_ROOM_DECAY s per s once drained.
#: A queue under QUEUE_QUIET needs no look at all (any playout delay covers it).
MAX_QUEUE_ROOM = 0.15
QUEUE_MARGIN = 0.02
QUEUE_ROOM_DECAY = 0.05
QUEUE_QUIET = 0.02


@dataclass(slots=True)
class PlayoutCounts(Counters):
    """What the relay's playout received, dropped, skipped and filled in (docs/architecture.md,
    "Bounded queues and counted drops")."""

    audio_frames_in: int = 0
    video_frames_in: int = 0
    audio_underruns: int = 0
    audio_late_samples: int = samples_counter(SAMPLE_RATE)  # arrived after it was read
    #: held before the first sender report, then stale
    audio_startup_skipped_samples: int = samples_counter(SAMPLE_RATE)
    audio_skipped_samples: int = samples_counter(SAMPLE_RATE)  # passed unplayed: output fell behind
    audio_skips: int = 0
    audio_gap_samples: int = samples_counter(SAMPLE_RATE)  # lost packets, filled with silence
    audio_overlap_samples: int = samples_counter(SAMPLE_RATE)
    audio_overflow_samples: int = samples_counter(SAMPLE_RATE)
    audio_reset_samples: int = samples_counter(SAMPLE_RATE)  # a new timeline
    video_overflow_frames: int = 0
    video_late_frames: int = 0
    #: forwarded frames dropped because the frames before them were (undecodable)
    video_waiting_keyframe_frames: int = 0
    #: keyframe requests answered by a keyframe already queued (none sent upstream)
    keyframe_requests_queued: int = 0
    delay_decreases: int = 0
    loss_room_raises: int = 0
    queue_room_raises: int = 0


class FrameProcessor:
    def __init__(self, *, playout_delay: float = 0.07, max_queue: float = 2.0,
                 max_extra_delay: float = 1.0, clock: Callable[[], float] = time.time):
        self.playout_delay = playout_delay
        self.max_queue = max_queue
        self.max_extra_delay = max_extra_delay
        self.clock = clock
        self.offset: float | None = None
        self.extra_delay = 0.0
        #: delay that lets retransmissions make the deadline while loss persists
        self.loss_room = 0.0
        self._room_at: float | None = None
        #: recent audio frames' slack without ``loss_room`` (arrival to read)
        self._slack: collections.deque[float] = collections.deque(maxlen=SLACK_FRAMES)
        #: delay that lets audio wait out a queue on the hop (while it stands)
        self.queue_room = 0.0
        #: the hop's queue delay last measured (s), and when (``clock``)
        self.queue_delay = 0.0
        self._queue_at: float | None = None
        #: recent audio frames' slack with neither room nor the queue they met (arrival to read)
        self._clean_slack: collections.deque[float] = collections.deque(maxlen=SLACK_FRAMES)
        self._window_start: float | None = None
        self._window_slack: float | None = None
        self.base_time: float | None = None
        # int16: exactly what is sent, so 48 kHz s16 from the cloud passes bit-exact with
        # no float conversion on the hot path
        # its ``start`` is the cloud sample index of the oldest sample held
        self._audio = IndexedAudioRing(CHANNELS, int(max_queue * SAMPLE_RATE), np.int16)
        self._audio_started = False
        self.lateness = LatenessPolicy()
        #: (cloud index, samples, local time) of the output's recent reads
        self._reads: collections.deque[tuple[int, int, float]] = collections.deque(maxlen=64)
        self.audio_cursor: int | None = None  # next cloud sample index to release
        self._video: collections.deque[tuple[float, VideoItem]] = collections.deque()
        #: encoded frames are taken only from a keyframe on (at the start, after a drop)
        self._video_needs_key = True
        #: asks the cloud for a keyframe (set by the cloud hop's client; who asks is named)
        self.request_keyframe: Callable[[str], None] = lambda source: None
        self._audio_event = asyncio.Event()
        self._video_event = asyncio.Event()
        self.closed = False
        self.counts = PlayoutCounts()

    # --- clock -------------------------------------------------------------------------
    def _observe(self, cloud_time: float, arrival: float) -> None:
        lag = arrival - cloud_time
        if self.offset is None or lag < self.offset:
            self.offset = lag
        if self.base_time is None:
            self.base_time = cloud_time - PTS_HEADROOM

    def release_time(self, cloud_time: float) -> float:
        assert self.offset is not None
        return cloud_time + self.offset + self.delay()

    def delay(self) -> float:
        """The playout delay past the offset, every term included (both tracks)."""
        return self.playout_delay + self.extra_delay + self.loss_room + self.queue_room

    def _base_budget(self) -> float | None:
        if len(self._slack) < MIN_SLACK_FRAMES:
            return None
        return statistics.median(self._slack) - HOLD_MARGIN

    def hold_budget(self) -> float | None:
        """Seconds an audio packet may wait past its ordinary arrival (in the receive
        path's jitter buffer) and still be played; None until audio has been seen."""
        base = self._base_budget()
        return None if base is None else base + self.loss_room

    def want_hold(self, seconds: float) -> None:
        """The receive path needs ``seconds`` of hold budget for retransmissions (0: loss
        has stopped): raise ``loss_room`` to make it at once, give it back slowly."""
        now = self.clock()
        base = self._base_budget()
        since, self._room_at = self._room_at, now
        if base is None:
            return
        target = min(MAX_LOSS_ROOM, max(0.0, seconds - base)) if seconds > 0 else 0.0
        if target > self.loss_room + ROOM_STEP:
            self.loss_room = target
            self.counts.loss_room_raises += 1
        elif target < self.loss_room and since is not None:
            self.loss_room = max(target, self.loss_room - ROOM_DECAY * max(0.0, now - since))

    def queue_seen(self, delay: float) -> None:
        """The cloud hop's queue delay is ``delay`` s now (the video's delay-based
        estimate): raise ``queue_room`` at once to what the audio in that queue needs
        beyond its clean slack, give it back at ``QUEUE_ROOM_DECAY`` as the queue drains."""
        self.queue_delay = delay
        if delay < QUEUE_QUIET and not self.queue_room:
            return  # no queue, no room held: the common case, per video packet
        now = self.clock()
        since, self._queue_at = self._queue_at, now
        if len(self._clean_slack) < MIN_SLACK_FRAMES:
            return
        base = statistics.median(self._clean_slack)
        target = min(MAX_QUEUE_ROOM, max(0.0, delay + QUEUE_MARGIN - base))
        if target > self.queue_room + ROOM_STEP:
            self.queue_room = target
            self.counts.queue_room_raises += 1
        elif target < self.queue_room and since is not None:
            self.queue_room = max(target, self.queue_room
                                  - QUEUE_ROOM_DECAY * min(1.0, max(0.0, now - since)))

    def _raise_delay(self, step: float) -> None:
        self.extra_delay = min(self.max_extra_delay, self.extra_delay + step)
        self._window_start, self._window_slack = None, None  # judge calm from here on

    def _judge_slack(self, cloud_time: float, arrival: float) -> None:
        """Track how early audio arrives; after a calm window, give back raised delay."""
        if not self.extra_delay:
            return
        slack = self.release_time(cloud_time) - arrival
        if self._window_start is None or self._window_slack is None:
            self._window_start, self._window_slack = arrival, slack
            return
        self._window_slack = min(self._window_slack, slack)
        if arrival - self._window_start >= DECAY_WINDOW:
            spare = self._window_slack - DECAY_MARGIN
            if spare > 0:
                self.extra_delay = max(0.0, self.extra_delay - min(spare, DECAY_STEP))
                self.counts.delay_decreases += 1
            self._window_start, self._window_slack = None, None  # a new window

    # --- writers (CloudWebRTCClient) ---------------------------------------------------
    def add_audio(self, samples: np.ndarray, cloud_time: float, arrival: float) -> None:
        """``samples``: int16 ``(2, n)`` at 48 kHz starting at ``cloud_time``."""
        self._observe(cloud_time, arrival)
        self.counts.audio_frames_in += 1
        index = round(cloud_time * SAMPLE_RATE)
        if not self._audio_started:
            self._audio.reset(index)
            self._audio_started = True
        gap = index - self._audio.end
        if gap >= SAMPLE_RATE or gap > 0 and not len(self._audio) and self.audio_cursor is None:
            self.counts.audio_reset_samples += self._audio.reset(index)  # a new timeline: counted
        # lost packets leave a gap that silence fills, keeping later audio on its time
        placed = self._audio.write_at(index, samples)
        self.counts.audio_gap_samples += placed.gap
        self.counts.audio_overlap_samples += placed.trimmed
        self.counts.audio_overflow_samples += placed.dropped
        self._judge_slack(cloud_time, arrival)
        slack = self.release_time(cloud_time) - OPUS_LOOKAHEAD_SECONDS - arrival
        self._slack.append(slack - self.loss_room)
        self._clean_slack.append(slack - self.loss_room - self.queue_room + self.queue_delay)
        if self.audio_cursor is not None:
            late = self._audio.discard_before(self.audio_cursor)
            if late:
                self.counts.audio_late_samples += late
                # how late this frame came for the read that needed it (the output reads
                # ahead of release by the Opus lookahead, and in 20 ms steps)
                read_at = self._read_time(index)
                if 0 < arrival - read_at <= MAX_JITTER:  # beyond that: stale, not jitter
                    step = self.lateness.late(arrival, read_at)
                    if step:
                        self._raise_delay(step)
            else:
                self.lateness.on_time(arrival)
        self._audio_event.set()

    def add_video(self, frame: VideoItem, cloud_time: float, arrival: float) -> None:
        self._observe(cloud_time, arrival)
        self.counts.video_frames_in += 1
        if is_key(frame):
            self._video_needs_key = False
        elif self._video_needs_key:
            self.counts.video_waiting_keyframe_frames += 1
            return
        self._video.append((cloud_time, frame))
        if self._video[-1][0] - self._video[0][0] > self.max_queue:
            self._video_overflow()
        self._video_event.set()

    def keyframe_queued(self) -> bool:
        """Whether a forwarded keyframe is queued, not yet released."""
        return any(isinstance(f, EncodedVideo) and f.keyframe for _, f in self._video)

    def video_gap(self) -> None:
        """Frames were lost before they reached the queue: take none before a keyframe."""
        self._video_needs_key = True
        self.request_keyframe("playout")

    def _video_overflow(self) -> None:
        """Drop the oldest frames beyond ``max_queue``; encoded ones up to a keyframe."""
        newest = self._video[-1][0]
        while self._video and newest - self._video[0][0] > self.max_queue:
            self._video.popleft()
            self.counts.video_overflow_frames += 1
            while self._video and not is_key(self._video[0][1]):
                self._video.popleft()  # undecodable without the frame dropped before them
                self.counts.video_overflow_frames += 1
        if not self._video:
            self.video_gap()

    # --- readers (output tracks) ------------------------------------------------------
    async def first_audio(self) -> int:
        """Wait for audio to exist; returns the cloud sample index to play next: where
        playback starts, then the cursor (the output track asks before every frame), moved
        on to what is due now if the output fell more than ``MAX_OUTPUT_LAG`` behind."""
        while not self._audio_started or self.offset is None:
            if self.closed:
                raise EOFError
            self._audio_event.clear()
            await self._audio_event.wait()
        due_now = int((self.clock() - self.offset - self.delay()) * SAMPLE_RATE)
        if self.audio_cursor is None:
            # Start at what is due now, not at the oldest held sample: a catch-up burst
            # would play stale audio and confuse the receiver's timing.
            self.audio_cursor = max(self._audio.start, due_now)
            self.counts.audio_startup_skipped_samples += self._audio.discard_before(self.audio_cursor)
        elif due_now - self.audio_cursor > MAX_OUTPUT_LAG * SAMPLE_RATE:
            # the output track fell behind (an overloaded relay): skip to now, never burst
            self.counts.audio_skipped_samples += due_now - self.audio_cursor
            self.counts.audio_skips += 1
            self.audio_cursor = due_now
            self._audio.discard_before(due_now)  # (counted in the skip)
        return self.audio_cursor

    def _read_time(self, index: int) -> float:
        """When the output read the sample at cloud index ``index`` (its release time if
        that read is no longer remembered)."""
        for start, count, when in reversed(self._reads):
            if start <= index < start + count:
                return when
        return self.release_time(index / SAMPLE_RATE)

    def take_audio(self, n: int) -> np.ndarray:
        """The ``n`` samples at the cursor; missing ones are silence (counted)."""
        cursor = self.audio_cursor
        assert cursor is not None
        self._reads.append((cursor, n, self.clock()))
        out = np.zeros((CHANNELS, n), np.int16)
        self.counts.audio_late_samples += self._audio.discard_before(cursor)
        lead = self._audio.start - cursor
        if lead < n and len(self._audio):
            count = min(n - max(lead, 0), len(self._audio))
            out[:, max(lead, 0):max(lead, 0) + count] = self._audio.read(count)
            if max(lead, 0) + count < n:
                self.counts.audio_underruns += 1
        else:
            self.counts.audio_underruns += 1
        self.audio_cursor = cursor + n
        return out

    def audio_queue_seconds(self) -> float:
        return len(self._audio) / SAMPLE_RATE

    async def next_video(self) -> tuple[float, VideoItem]:
        """The next frame to show. Frames already a whole queue-length late are skipped
        (counted), except the newest, so the picture catches up instead of bursting;
        encoded frames only up to the newest due keyframe (none due and far behind: one
        is asked for)."""
        while not self._video:
            if self.closed:
                raise EOFError
            self._video_event.clear()
            await self._video_event.wait()
        now = self.clock()
        video = self._video
        if len(video) > 1 and self.release_time(video[1][0]) < now:
            skip_to = 0
            for i in range(1, len(video)):
                if self.release_time(video[i][0]) >= now:
                    break
                if is_key(video[i][1]):
                    skip_to = i
            for _ in range(skip_to):
                video.popleft()
                self.counts.video_late_frames += 1
            if len(video) > 1 and isinstance(video[0][1], EncodedVideo) and \
                    now - self.release_time(video[0][0]) > KEYFRAME_WANTED_LAG:
                self.request_keyframe("playout")  # late with nothing to skip to
        return video.popleft()

    def close(self) -> None:
        self.closed = True
        self._audio_event.set()
        self._video_event.set()

    def stats(self) -> dict[str, Any]:
        video_ms = (self._video[-1][0] - self._video[0][0]) * 1000 if len(self._video) > 1 else 0.0
        return {
            "offset_ms": None if self.offset is None else round(self.offset * 1000, 1),
            "playout_delay_ms": round(self.delay() * 1000, 1),
            "extra_delay_ms": round(self.extra_delay * 1000, 1),
            "loss_room_ms": round(self.loss_room * 1000, 1),
            "queue_room_ms": round(self.queue_room * 1000, 1),
            "queue_delay_ms": round(self.queue_delay * 1000, 1),
            "hold_budget_ms": None if (budget := self.hold_budget()) is None
            else round(budget * 1000, 1),
            "late_episodes": self.lateness.episodes,
            "late_episodes_forgiven": self.lateness.forgiven,
            "delay_raises": self.lateness.raises,
            "audio_queue_ms": round(self.audio_queue_seconds() * 1000, 1),
            "video_queue_ms": round(video_ms, 1),
            "video_queue_frames": len(self._video),
            **self.counts.as_stats(),
        }
