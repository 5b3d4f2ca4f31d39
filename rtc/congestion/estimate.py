"""A GCC-style bandwidth estimate for one video sender (draft-ietf-rmcat-gcc-02).

Two controllers, the lower wins (GCC: the minimum of delay-based and loss-based):

- **delay-based**: the receiver's REMB, from our own delay-based estimator
  (:mod:`.delay_based`: arrival times off the socket, 5 ms send groups, a trendline
  detector, AIMD). It is taken at its word: the limit is the REMB. A REMB under
  :data:`FALL_SHARE` of the one before is the receiver's decrease (an overuse, counted).
  One exception, GCC's application-limited case: the receiver never lets its estimate run
  past 1.5x what arrives, so while the encoder sends under :data:`APP_LIMITED_SHARE` of
  its target (a quiet picture; libx264 under VBV) a REMB that did not fall does not pull
  the limit under the target: it grows as the loss-based one does.
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

#: a REMB this much under the one before is the receiver's decrease (an overuse; its
#: estimate only falls on one)
FALL_SHARE = 0.97
#: an encoder sending under this share of its target is application limited: the
#: receiver's cap (1.5x what arrives) is no verdict on the path
APP_LIMITED_SHARE = 0.8
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
    #: the delay-based limit (None: none, until a REMB; gone once at the ceiling)
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
        fell = previous is not None and bps < FALL_SHARE * previous
        if fell:
            self.overuses += 1
            self._last_overuse = now
        value = float(bps)
        if not fell and sent is not None and sent < APP_LIMITED_SHARE * self.value:
            # application limited: grow as the loss-based limit does, past the REMB
            base = self.delay_based if self.delay_based is not None else float(self.value)
            grown = base * (1 + GROWTH_PER_S) ** min(elapsed, 2.0)
            value = max(value, min(grown, self.growth_cap(sent, now)))
        self.delay_based = None if value >= self.ceiling else max(value, float(self.floor))

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
