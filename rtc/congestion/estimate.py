"""A GCC-style bandwidth estimate for one video sender (draft-ietf-rmcat-gcc-02).

Two controllers, the lower wins:

- **delay-based**: the receiver's REMB. aiortc's receivers compute it from abs-send-time
  (inter-arrival delay growth, AIMD: 0.85x the incoming rate on overuse, else slowly up
  to 1.5x it). Its value follows the incoming rate, so what counts is its *fall*: a REMB
  under the one before and under :data:`OVERUSE_SHARE` of the send rate is an overuse
  when the receiver reports confirm it (2 % loss or more, or a round trip grown by a queue:
  a relay starved of CPU reads as overuse to aiortc's estimator, a real queue shows in
  the reports too),
  and the limit goes to 0.85x the send rate (GCC's decrease), or to the REMB if higher,
  once per interval; any other REMB lets the limit grow again as fast as the loss-based
  one grows (a quiet picture that sends little must not drag it down).
- **loss-based**: the fraction lost in the receiver reports. Above :data:`HIGH_LOSS` the
  estimate falls by ``1 - 0.5 * loss`` (at most once per :data:`DECREASE_INTERVAL` plus a
  round trip, so one congestion event is not counted twice; the sender passes the larger
  of the report's fraction and the share of packets NACKed since the last report, since
  the report counts a repaired packet as received); below :data:`LOW_LOSS` it may
  grow by :data:`GROWTH_PER_S` a second; while a congestion signal is live (a loss
  decrease not yet grown out of, a delay overuse in the last :data:`SIGNAL_MEMORY` s)
  never past :data:`PROBE_FACTOR` times what is really sent (an estimate we never tested
  there is not one), otherwise past it: an encoder that undershoots its target (libx264
  under VBV sends ~2/3 of it) is not the path's limit, and capping by its output would
  pin the rate wherever it started (:meth:`BandwidthEstimate.growth_cap`); and only by
  :data:`NEAR_MAX_GROWTH_PER_S` a second within :data:`NEAR_MAX` of the rate that last
  lost (so a ceiling's queue is not refilled at once, the audio with it), until well
  past it; in between it holds.

Without receiver reports for :data:`FEEDBACK_TIMEOUT` s (once some have come) the
estimate halves every second (:meth:`BandwidthEstimate.on_silence`).

Pure logic on the caller's clock (seconds), so tests feed it synthetic feedback.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: REMB under this share of the send rate means the path carries less than we send
#: (aiortc's estimate is 0.85x the incoming rate on overuse, and about the incoming rate
#: when it starts: under 0.8x, the path carries less than we send)
OVERUSE_SHARE = 0.8
#: aiortc's estimate only ever falls on overuse (to 0.85x the incoming rate): a REMB this
#: much under the one before is an overuse; its value alone is not (after a decrease it
#: climbs back additively, and would hold us far under the path)
FALL_SHARE = 0.97
#: a round trip this much (s) over its least means a queue is building on the path
QUEUE_RTT = 0.03
#: at most one delay-based decrease per this (plus the round trip), s: aiortc's receiver
#: sends a REMB on every overuse it detects, and a falling rate takes a while to show
DELAY_DECREASE_INTERVAL = 1.0
#: an overuse takes the delay-based limit to this share of the send rate (GCC's 0.85)
OVERUSE_DECREASE = 0.85
HIGH_LOSS = 0.10
LOW_LOSS = 0.02
#: at most one loss decrease per this (plus the round trip), s: receiver reports come
#: about once a second, and the one after a decrease still describes the rate before it
DECREASE_INTERVAL = 1.2
#: loss-based growth while loss is low, a second (GCC: 5 % a report; faster, so a lifted
#: ceiling is climbed back within 10 s)
GROWTH_PER_S = 0.15
#: within this share of the rate that last lost, the loss-based limit grows additively,
#: by NEAR_MAX_GROWTH_PER_S of that rate a second
NEAR_MAX = 0.9
NEAR_MAX_GROWTH_PER_S = 0.05
#: no receiver report for this long (s) after some came: the estimate halves each second
FEEDBACK_TIMEOUT = 3.0
#: while a congestion signal is live, the estimate never runs ahead of the send rate
#: by more than this
PROBE_FACTOR = 1.5
#: a delay overuse is a live congestion signal for this long (s)
SIGNAL_MEMORY = 10.0


@dataclass
class BandwidthEstimate:
    """The estimate, in bits a second, within ``[floor, ceiling]``."""

    floor: int
    ceiling: int
    #: the delay-based limit (None: none, until REMB says overuse; gone once grown out)
    delay_based: float | None = None
    #: the loss-based limit (None: none, until loss makes one; gone again once grown out)
    loss_based: float | None = None
    last_loss: float = 0.0
    rtt: float = 0.0
    min_rtt: float | None = None
    #: the send rate at the last loss decrease (None: none, or grown well past it)
    loss_max: float | None = None
    silence_cuts: int = 0
    _last_silence_cut: float = field(default=-1e9, repr=False)
    decreases: int = 0
    overuses: int = 0
    _last_decrease: float = field(default=-1e9, repr=False)
    _last_remb: float | None = field(default=None, repr=False)
    _last_remb_value: float | None = field(default=None, repr=False)
    _last_delay_decrease: float = field(default=-1e9, repr=False)
    _last_overuse: float = field(default=-1e9, repr=False)
    _last_loss_update: float | None = field(default=None, repr=False)

    @property
    def value(self) -> int:
        """The estimate: the lower limit, within [floor, ceiling]."""
        limits = [x for x in (self.delay_based, self.loss_based) if x is not None]
        value = min(limits, default=float(self.ceiling))
        return int(min(max(value, self.floor), self.ceiling))

    def on_delay_estimate(self, bps: float, sent: float | None, now: float) -> None:
        """A REMB of ``bps`` at ``now`` while we sent ``sent`` b/s (None: not known)."""
        elapsed = 0.0 if self._last_remb is None else now - self._last_remb
        previous, self._last_remb, self._last_remb_value = self._last_remb_value, now, bps
        overuse = previous is not None and bps < FALL_SHARE * previous and (
            sent is None or bps < OVERUSE_SHARE * sent) and self.path_congested()
        if overuse:
            # down to 0.85x what we send (GCC's decrease, of the rate the receiver
            # measured), or to the REMB if higher, once per interval: a receiver that
            # stalled (a loaded machine) reads as overuse too and must cost one step, not
            # the rate; a real ceiling repeats it until we fit
            if now - self._last_delay_decrease >= DELAY_DECREASE_INTERVAL + self.rtt:
                known = OVERUSE_DECREASE * sent if sent is not None else float(bps)
                lower = max(float(bps), known, float(self.floor))
                self.delay_based = min(lower, self.delay_based or float(self.ceiling))
                self._last_delay_decrease = now
                self.overuses += 1
            self._last_overuse = now
        elif self.delay_based is not None:
            # no overuse: grow as the loss-based limit does (aiortc's own estimate climbs
            # back additively after a decrease, a few tens of kb/s a second), or as the
            # receiver's estimate, whichever is faster, up to PROBE_FACTOR x what is sent
            grown = self.delay_based * (1 + GROWTH_PER_S) ** min(elapsed, 2.0)
            cap = self.growth_cap(sent, now)
            value = max(self.delay_based, min(grown, cap), float(bps))
            self.delay_based = None if value >= self.ceiling else value

    def growth_cap(self, sent: float | None, now: float) -> float:
        """How far a limit may grow while the encoder sends ``sent`` b/s: PROBE_FACTOR x
        that while a congestion signal is live (a loss decrease not yet grown out of, a
        delay overuse within :data:`SIGNAL_MEMORY` s: near a known limit, only a rate
        really sent has been tested); else PROBE_FACTOR x the target (the estimate in
        force), which an encoder under its target (application limited) does not pin."""
        if sent is None:
            return float(self.ceiling)
        live = self.loss_max is not None or now - self._last_overuse < SIGNAL_MEMORY
        return PROBE_FACTOR * (sent if live else max(sent, float(self.value)))

    def path_congested(self) -> bool:
        """Whether the receiver reports back a REMB's overuse: 2 % loss or more, or a round trip
        grown past its least by :data:`QUEUE_RTT` (a queue building). A receiver starved
        of CPU (the relay on a loaded machine) reads as overuse to aiortc's estimator
        while nothing queues on the path; a real bottleneck's queue shows in both."""
        queued = self.min_rtt is not None and self.rtt - self.min_rtt > QUEUE_RTT
        return self.last_loss >= LOW_LOSS or queued

    def on_loss_report(self, fraction_lost: float, now: float, sent: float | None,
                       rtt: float | None = None) -> None:
        """A receiver report's fraction lost (0..1) at ``now``, while sending ``sent`` b/s."""
        if rtt is not None:
            self.rtt = rtt
            self.min_rtt = rtt if self.min_rtt is None else min(self.min_rtt, rtt)
        self.last_loss = fraction_lost = min(max(fraction_lost, 0.0), 1.0)
        elapsed = 0.0 if self._last_loss_update is None else now - self._last_loss_update
        self._last_loss_update = now
        base = self.loss_based
        if fraction_lost > HIGH_LOSS:
            if now - self._last_decrease >= DECREASE_INTERVAL + self.rtt:
                # from what the path carried, not from a limit we never reached
                known = [x for x in (base, sent) if x is not None]
                start = min(known) if known else float(self.value)
                base = start * (1 - 0.5 * fraction_lost)
                self.loss_max = start  # what the path did not carry
                self._last_decrease = now
                self.decreases += 1
        elif fraction_lost < LOW_LOSS and base is not None:
            grown = base * (1 + GROWTH_PER_S) ** min(elapsed, 2.0)
            if self.loss_max is not None and grown > NEAR_MAX * self.loss_max:
                # near the rate that lost last: creep (AIMD's additive increase), so the
                # queue of a ceiling is not filled again at once, audio with it
                creep = base + NEAR_MAX_GROWTH_PER_S * self.loss_max * min(elapsed, 2.0)
                grown = max(min(grown, NEAR_MAX * self.loss_max), creep)
                if grown > self.loss_max / NEAR_MAX:
                    self.loss_max = None  # well past it without loss: the ceiling went
            base = max(base, min(grown, self.growth_cap(sent, now)))
            if base >= self.ceiling:
                base = None  # back to no limit: loss no longer says anything
        self.loss_based = None if base is None else max(base, float(self.floor))

    def on_silence(self, now: float) -> None:
        """Called as the sender sends: once receiver reports have come, none for
        :data:`FEEDBACK_TIMEOUT` s halves the estimate every second. A receiver that
        has gone (its peer replaced by a new one over the same congested path) or whose
        reports are lost in a full queue must not be sent the full rate blind."""
        if self._last_loss_update is None or now - self._last_loss_update < FEEDBACK_TIMEOUT:
            return
        if now - self._last_silence_cut >= 1.0:
            self.loss_based = max(0.5 * self.value, float(self.floor))
            self._last_silence_cut = now
            self.silence_cuts += 1

    def stats(self) -> dict[str, float | int | None]:
        return {"estimate_bitrate": self.value,
                "delay_based_bitrate": None if self.delay_based is None else round(self.delay_based),
                "loss_based_bitrate": None if self.loss_based is None else round(self.loss_based),
                "reported_loss": round(self.last_loss, 4), "loss_decreases": self.decreases,
                "delay_overuses": self.overuses, "feedback_silence_cuts": self.silence_cuts}
