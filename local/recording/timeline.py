"""Where each tapped frame goes in a recording's file, so the file keeps the live A/V
alignment and its timestamps only ever move forward.

The relay's output tracks count both pts from one base (video at 90 kHz, audio at 48 kHz,
``protocol/media.py``), so a video frame and an audio sample with the same pts in seconds
went to the browser to be shown together. The file's time 0 is the first frame of either
track; everything is placed at ``pts - origin + stall``. That keeps the recorded offset the
live one.

``stall`` keeps the file as long as the wall time it covers. The relay releases media at
``pts + delay`` on its clock; when that delay rises (late audio raised it), the output
pauses for that long while its pts run on without a gap: the browser meets a pause. Each
frame comes with the delay it was sent under, and its change since the recording began is
the stall: both tracks move later together, the pause becomes silence and a held frame.
When the delay falls (a faster path, or calm after jitter), the relay sends that much
media at once and the browser catches up by playing it faster; the file drops the same
amount where it overlaps what was written (counted), so it stays as long as the wall
time. A change takes effect at one output time for both tracks (past anything either has
placed, on a boundary between audio frames: ``StallSteps``), not at whichever frame
happened to be sent next, or the frames around it would part by up to a frame.

Gaps are filled rather than collapsed: missing audio (a dropped frame) becomes silence,
and a pause in the picture (a stalled or paused pipeline, a cloud-hop reconnect, a frame
the relay skipped) repeats the last frame at the stream's own frame interval, so an editor
sees a constant frame rate. Past ``CFR_GAP`` of one gap, the held frame is repeated only
once a second, bounding the work a long pause costs. Media that comes back in time (which
the relay's tracks never send) is dropped and counted until it is past what was written,
never squeezed in; a jump of more than ``MAX_GAP`` forward or ``MAX_BACK`` back moves the
origin of both tracks together, so the file stays continuous and in sync after it.
"""

from __future__ import annotations

import collections
import math
import statistics
from dataclasses import dataclass

from scope_relay.protocol.media import SAMPLE_RATE, VIDEO_CLOCK_RATE

#: The frame interval assumed until two frames have shown the real one (seconds).
DEFAULT_INTERVAL = 1 / 30
#: Frame intervals outside this range are not taken as the stream's own (a gap, a burst).
MIN_INTERVAL, MAX_INTERVAL = 1 / 120, 0.1
#: Held frames come at the frame interval for this long into a gap, then once a second.
CFR_GAP = 10.0
SPARSE_STEP = 1.0
#: A jump forward larger than this is a new timeline, not a gap to fill; so is one back
#: by more than ``MAX_BACK``.
MAX_GAP = 60.0
MAX_BACK = 2.0
#: The frame interval is the median of this many recent ones (a missed frame is no vote).
INTERVAL_VOTES = 15
#: Changes of the output delay smaller than this are not followed (no 1-sample steps).
STEP_RESOLUTION = 0.001


@dataclass
class AudioPlacement:
    """How to write one tapped audio frame: ``silence`` samples first, then the frame
    without its first ``skip`` samples (those overlap audio already written)."""

    silence: int
    skip: int


class StallSteps:
    """The stall as a step function of output time: a change seen now applies from the
    output time past everything placed so far, on both tracks alike. With audio, only
    audio frames make steps, on their own grid, so no audio frame straddles one."""

    def __init__(self) -> None:
        self.stall = 0.0  # the delay's change since the first frame (s)
        self._first_delay: float | None = None
        self._steps: collections.deque[tuple[float, float]] = collections.deque()  # (from, stall)
        self._below = 0.0  # the stall before the first step kept
        self._reach = float("-inf")  # the furthest output time placed, either track

    def at(self, seconds: float, end: float, delay: float, *, steps: bool) -> float:
        """The stall for media at output time ``seconds`` to ``end``, sent under ``delay``;
        ``steps``: this frame may start a step (an audio frame, or any frame without audio)."""
        if self._first_delay is None:
            self._first_delay = delay
        rise = delay - self._first_delay
        if abs(rise - self.stall) > STEP_RESOLUTION and steps:
            start, length = seconds, end - seconds
            if self._reach > start and length > 0:  # onto this frame's grid, past the reach
                start += math.ceil((self._reach - start) / length - 1e-9) * length
            self._steps.append((start, rise))
            self.stall = rise
        stall = self._below
        for start, value in reversed(self._steps):
            if seconds >= start:
                stall = value
                break
        self._reach = max(self._reach, end)
        # steps far behind everything placed will never be looked up again
        while len(self._steps) > 1 and self._steps[1][0] <= self._reach - MAX_BACK:
            self._below = self._steps.popleft()[1]
        return stall


class RecordingTimeline:
    """Maps output pts to file time (seconds from the file's 0) for both tracks at once."""

    def __init__(self, *, audio: bool = True) -> None:
        self._audio = audio
        self.origin: float | None = None  # output time (s) of the file's 0
        self.stalls = StallSteps()
        self.audio_written = 0             # samples placed so far
        self.video_last: float | None = None  # file time of the last frame placed
        self.interval = DEFAULT_INTERVAL
        self._deltas: collections.deque[float] = collections.deque(maxlen=INTERVAL_VOTES)
        # figures
        self.silence_samples = 0
        self.overlap_samples = 0
        self.held_frames = 0
        self.behind_frames = 0
        self.timeline_jumps = 0

    def _file_time(self, seconds: float, delay: float, end: float, *, audio: bool) -> float:
        if self.origin is None:
            self.origin = seconds
        t = seconds - self.origin + self.stalls.at(seconds, end, delay,
                                                   steps=audio or not self._audio)
        end = self.end
        if t - end > MAX_GAP or end - t > MAX_BACK:  # a new timeline: both go on from the end
            self.origin += t - end
            self.timeline_jumps += 1
            t = end
        return t

    @property
    def end(self) -> float:
        """How far the file reaches, in seconds."""
        video_end = -1.0 if self.video_last is None else self.video_last + self.interval
        return max(self.audio_written / SAMPLE_RATE, video_end, 0.0)

    # --- audio -------------------------------------------------------------------------
    def place_audio(self, pts: int, samples: int, delay: float = 0.0) -> AudioPlacement:
        """Audio at output pts ``pts`` (48 kHz), ``samples`` long, sent ``delay`` s after
        its pts (on the relay's clock, less a constant)."""
        t = self._file_time(pts / SAMPLE_RATE, delay, (pts + samples) / SAMPLE_RATE, audio=True)
        at = round(t * SAMPLE_RATE)
        silence = max(0, at - self.audio_written)
        skip = min(samples, max(0, self.audio_written - at))
        self.silence_samples += silence
        self.overlap_samples += skip
        self.audio_written += silence + samples - skip
        return AudioPlacement(silence, skip)

    # --- video -------------------------------------------------------------------------
    def place_video(self, pts: int, delay: float = 0.0) -> tuple[list[float], float] | None:
        """A video frame at output pts ``pts`` (90 kHz), sent ``delay`` s after its pts
        (as for audio): the file times at which to repeat
        the previous frame first (filling a gap), and this frame's own file time; None for
        a frame not after the previous one (dropped, counted). The first frame is placed
        at 0: shown from the file's start, which may be the first audio's."""
        t = self._file_time(pts / VIDEO_CLOCK_RATE, delay, pts / VIDEO_CLOCK_RATE, audio=False)
        last = self.video_last
        if last is None:
            self.video_last = 0.0
            return [], 0.0
        if t < last + 1 / VIDEO_CLOCK_RATE:
            self.behind_frames += 1
            return None
        held = self._held_times(last, t)
        delta = t - last
        if MIN_INTERVAL <= delta <= MAX_INTERVAL:
            self._deltas.append(delta)
            self.interval = statistics.median(self._deltas)
        self.video_last = t
        return held, t

    def video_tail(self) -> list[float]:
        """At the end: the times to repeat the last frame at so the picture lasts as long
        as the sound."""
        if self.video_last is None:
            return []
        end = self.audio_written / SAMPLE_RATE
        held = self._held_times(self.video_last, end)
        if held:
            self.video_last = held[-1]
        return held

    def _held_times(self, last: float, until: float) -> list[float]:
        """Times to repeat the frame shown at ``last`` until the next one at ``until``:
        at the frame interval (a whole slot must be free), sparser deep into a long gap."""
        out: list[float] = []
        t = last
        while True:
            step = self.interval if t - last < CFR_GAP else SPARSE_STEP
            if t + step > until - self.interval / 2:
                break
            t += step
            out.append(t)
        self.held_frames += len(out)
        return out

    def stats(self) -> dict[str, float | int]:
        return {
            "stall_ms": round(self.stalls.stall * 1000, 1),
            "silence_ms": round(self.silence_samples / SAMPLE_RATE * 1000, 1),
            "overlap_ms": round(self.overlap_samples / SAMPLE_RATE * 1000, 1),
            "held_frames": self.held_frames,
            "behind_frames": self.behind_frames,
            "timeline_jumps": self.timeline_jumps,
        }
