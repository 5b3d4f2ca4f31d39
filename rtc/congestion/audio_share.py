"""The audio's share of the path: Opus steps down only when the video has given up all it
can and the path still loses the audio, and climbs back when the path allows.

Audio keeps priority. Under a ceiling the video gives way first: its bandwidth estimate
(:mod:`.estimate`) falls and its ladder (:mod:`.ladder`) follows, down to the video's
floor. Where the estimate comes from for audio: the REMB our receiver sends describes
the video SSRC alone (:mod:`.delay_based` sees only video arrivals), so it is the video's
share of the path beside the audio as it is, and it never goes under the video's floor.
"The path is under the audio's rate plus the video's floor" can therefore only be seen as
the video's estimate sitting at its floor while the audio's own receiver reports still
say packets are lost (fraction lost, or packets NACKed, which a late retransmission hides
from the fraction) and a queue has grown on the path (the reports' round trip more than
:data:`QUEUE_RTT` over the least seen: loss without a queue is random loss, which a
lower rate does not cure and FEC covers; over :data:`HEAVY_LOSS` it counts without one, as
a ceiling from the session's start hides the queue in the least round trip). Only then
does Opus step down (:data:`STEPS`). With no video (an audio-only session) the audio's
reports are the only signal.

Past that the audio still keeps priority: starved at its own floor for :data:`YIELD_HOLD` s,
it asks the video to go under its floor (:attr:`AudioShare.video_yields`, until the audio
steps up again; the session lowers the video estimate's floor).

Up again: after :data:`UP_HOLD` s without loss, and with video only when the video's
estimate is clear of its floor by the step's extra rate (what the audio takes back is
then the video's to give). A step up that meets loss within :data:`PROBE_WINDOW` s was
too far: the next try waits twice as long (up to :data:`MAX_UP_HOLD` s), so a ceiling is
not probed into every few seconds; a step up that holds resets the wait.

Pure logic on the caller's clock (s); :func:`scope_relay.rtc.opus.share_path` feeds it
from an audio sender's RTCP and sets the encoder's rate.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: Opus bitrates (b/s) the audio steps through; the top is the session's own rate (those
#: above it are left out), the last is the floor (music stays music at 24 kb/s stereo)
STEPS: tuple[int, ...] = (128_000, 96_000, 64_000, 48_000, 32_000, 24_000)
#: a report's loss above this is congestion (a lossy path without a ceiling loses less;
#: FEC, rtc/opus.py, covers that)
DOWN_LOSS = 0.05
#: above this, two steps at once (a ceiling far under the audio: leave it fast), and
#: congestion even without a queue in the round trip
HEAVY_LOSS = 0.2
#: the path is clean for a step up below this loss
UP_LOSS = 0.02
#: at most one step down per this (s): the report after a step still describes the rate
#: before it (reports come about once a second)
DOWN_HOLD = 1.5
UP_HOLD = 8.0
MAX_UP_HOLD = 64.0
#: a loss this soon (s) after a step up: the step up failed
PROBE_WINDOW = 4.0
#: a queue on the path: the round trip this much (s) over the least seen
QUEUE_RTT = 0.03
#: the video is at its floor when its estimate is within this share of it
AT_FLOOR = 1.1
#: the video's estimate must be clear of its floor by this times a step's extra rate
UP_MARGIN = 1.5
#: the audio at its own floor and still losing behind a queue for this long (s): the video
#: yields under its floor (:attr:`AudioShare.video_yields`), the audio keeping priority
YIELD_HOLD = 3.0


@dataclass(frozen=True)
class VideoShare:
    """The video sender's bandwidth estimate and its floor (b/s)."""

    estimate: int
    floor: int

    @property
    def at_floor(self) -> bool:
        return self.estimate <= AT_FLOOR * self.floor


@dataclass
class AudioShare:
    """The Opus bitrate for one audio sender (:attr:`bitrate`), moved by :meth:`update`."""

    top: int
    #: whether the session sends video too (then the video gives way first)
    with_video: bool
    steps: tuple[int, ...] = field(init=False)
    step: int = 0
    steps_down: int = 0
    steps_up: int = 0
    failed_probes: int = 0
    up_hold: float = UP_HOLD
    last_loss: float = 0.0
    min_rtt: float | None = None
    #: whether the video should go under its own floor (the audio starves at its floor)
    video_yields: bool = False
    yields: int = 0
    _starved_since: float | None = field(default=None, repr=False)
    _last_move: float = field(default=-1e9, repr=False)
    _last_up: float | None = field(default=None, repr=False)
    _clean_since: float | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        below = tuple(rate for rate in STEPS if rate < self.top)
        self.steps = (self.top, *below) if self.top > STEPS[-1] else (self.top,)

    @property
    def bitrate(self) -> int:
        return self.steps[self.step]

    def update(self, now: float, loss: float, video: VideoShare | None,
               rtt: float | None) -> int:
        """A receiver report's loss (0..1, before repair) and round trip (s; None: not
        known) at ``now``; ``video``: the video's estimate now (None: no video, or its
        encoder not built yet). Returns the bitrate."""
        self.last_loss = loss = min(max(loss, 0.0), 1.0)
        if rtt is not None:
            self.min_rtt = rtt if self.min_rtt is None else min(self.min_rtt, rtt)
        queued = rtt is not None and self.min_rtt is not None and rtt - self.min_rtt > QUEUE_RTT
        if loss >= UP_LOSS:
            self._clean_since = None
            if self._last_up is not None and now - self._last_up <= PROBE_WINDOW:
                self.failed_probes += 1
                self.up_hold = min(2 * self.up_hold, MAX_UP_HOLD)
                self._last_up = None
        elif self._clean_since is None:
            self._clean_since = now
        if self._last_up is not None and now - self._last_up > PROBE_WINDOW:
            self.up_hold, self._last_up = UP_HOLD, None  # the step up held
        if self.with_video and video is None:
            return self.bitrate  # the video's share is not known yet: hold
        squeezed = (queued or loss > HEAVY_LOSS) and (video is None or video.at_floor)
        starved = loss > DOWN_LOSS and squeezed and self.step == len(self.steps) - 1
        if not starved:
            self._starved_since = None
        elif self._starved_since is None:
            self._starved_since = now
        elif now - self._starved_since >= YIELD_HOLD and not self.video_yields:
            self.video_yields, self.yields = True, self.yields + 1
        if loss > DOWN_LOSS and squeezed and now - self._last_move >= DOWN_HOLD:
            self._move(min(len(self.steps) - 1, self.step + (2 if loss > HEAVY_LOSS else 1)), now)
        elif self.step > 0 and self._clean_since is not None \
                and now - max(self._clean_since, self._last_move) >= self.up_hold:
            extra = self.steps[self.step - 1] - self.bitrate
            if video is None or video.estimate >= video.floor + UP_MARGIN * extra:
                self._move(self.step - 1, now)
                self._last_up, self.video_yields = now, False
        return self.bitrate

    def _move(self, step: int, now: float) -> None:
        if step > self.step:
            self.steps_down += 1
        elif step < self.step:
            self.steps_up += 1
        self.step, self._last_move = step, now

    def stats(self) -> dict[str, float | int]:
        return {"bitrate": self.bitrate, "bitrate_steps_down": self.steps_down,
                "bitrate_steps_up": self.steps_up, "failed_probes": self.failed_probes,
                "reported_loss": round(self.last_loss, 4), "video_yields": self.yields}
