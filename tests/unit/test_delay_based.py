"""The delay-based estimate (rtc.congestion: inter_arrival, trendline, aimd, delay_based)
on synthetic arrival series: a bottleneck's growing queue is an overuse and the rate
settles under it; jitter and a receiver's stalls alone are not."""

from __future__ import annotations

import random

import pytest

from scope_relay.rtc.congestion.aimd import AimdRate
from scope_relay.rtc.congestion.delay_based import DelayBasedEstimate
from scope_relay.rtc.congestion.inter_arrival import InterArrival, SendTimeUnwrapper
from scope_relay.rtc.congestion.trendline import Trendline, Usage

PACKET = 1200  # bytes


def abs_send_time(seconds: float) -> int:
    return round(seconds * (1 << 18)) & 0xFFFFFF


class Path:
    """A bottleneck of ``capacity`` b/s (None: none) with a one-way ``delay`` and a FIFO
    queue, plus per-packet ``jitter`` (s, uniform, arrivals kept in order) and receiver
    stalls (every ``stall_every`` s the receiver sees nothing for ``stall`` s, then all)."""

    def __init__(self, capacity: float | None, delay: float = 0.02, jitter: float = 0.0,
                 stall: float = 0.0, stall_every: float = 1.0, seed: int = 1) -> None:
        self.capacity, self.delay, self.jitter = capacity, delay, jitter
        self.stall, self.stall_every = stall, stall_every
        self._free = 0.0  # when the bottleneck's link is next free
        self._last = 0.0
        self._random = random.Random(seed)

    def arrival(self, send: float, size: int) -> float:
        leave = send
        if self.capacity is not None:
            leave = self._free = max(send, self._free) + size * 8 / self.capacity
        at = leave + self.delay + self._random.uniform(0, self.jitter)
        if self.stall:  # the receiver's event loop stalled: the datagram is seen at its end
            phase = at % self.stall_every
            if phase < self.stall:
                at += self.stall - phase
        self._last = max(self._last, at)
        return self._last


def stream(estimate: DelayBasedEstimate, path: Path, seconds: float, rate: float,
           start: float = 0.0) -> list[int]:
    """Send paced packets for ``seconds`` at ``rate``; the REMBs due."""
    rembs: list[int] = []
    now = start
    while now < start + seconds:
        remb = estimate.on_packet(path.arrival(now, PACKET), abs_send_time(now), PACKET)
        if remb is not None:
            rembs.append(remb)
        now += PACKET * 8 / rate
    return rembs


def test_send_time_unwraps_across_64_seconds():
    unwrap = SendTimeUnwrapper()
    times = [63.9, 63.99, 0.01, 0.2, 0.1]  # across the wrap, then one a step back
    seconds = [unwrap.unwrap(abs_send_time(t)) for t in times]
    assert seconds[2] - seconds[1] == pytest.approx(0.02, abs=1e-5)
    assert seconds[3] == pytest.approx(64.2, abs=1e-5) and seconds[4] < seconds[3]


def test_groups_packets_sent_within_5_ms_and_leaves_reordered_ones_out():
    groups = InterArrival()
    out = [groups.add(s, s + 0.02, 100) for s in (0.0, 0.002, 0.004, 0.010, 0.012, 0.020)]
    assert out[:5] == [None, None, None, None, None]  # the first group: no deltas yet
    deltas = out[5]
    assert deltas is not None
    assert deltas.send == pytest.approx(0.008) and deltas.arrival == pytest.approx(0.008)
    assert groups.add(0.001, 0.05, 100) is None and groups.reordered == 1


def test_a_ceilings_growing_queue_is_an_overuse_within_a_second():
    estimate = DelayBasedEstimate()
    stream(estimate, Path(capacity=1_000_000), seconds=3.0, rate=800_000)  # fits: learns the rate
    assert estimate.detector.overuses == 0 and estimate.detector.state is not Usage.OVERUSE
    rembs = stream(estimate, Path(capacity=1_000_000), seconds=1.0, rate=1_500_000, start=3.0)
    assert estimate.detector.overuses >= 1
    assert rembs and rembs[-1] < 1_000_000  # 0.85x what arrives: under the ceiling


@pytest.mark.parametrize("jitter,stall", [(0.010, 0.0), (0.0, 0.05), (0.005, 0.03)])
def test_jitter_and_receiver_stalls_alone_are_no_overuse(jitter, stall):
    """A clean path at 1 Mb/s for 60 s with up to 10 ms of jitter, or the receiver's event
    loop stalling 50 ms every second (the datagrams all seen at its end)."""
    estimate = DelayBasedEstimate()
    rembs = stream(estimate, Path(capacity=None, jitter=jitter, stall=stall), seconds=60.0,
                      rate=1_000_000)
    assert estimate.detector.overuses == 0
    assert rembs and min(rembs[1:]) >= 1_000_000  # never under what is sent


def test_a_sender_that_follows_the_remb_settles_under_the_ceiling_and_drains_the_queue():
    estimate = DelayBasedEstimate()
    path = Path(capacity=1_000_000)
    now, sending, queue_at_end = 0.0, 2_000_000.0, []  # twice the ceiling, then the REMB
    while now < 22.0:
        arrival = path.arrival(now, PACKET)
        remb = estimate.on_packet(arrival, abs_send_time(now), PACKET)
        if remb is not None:
            sending = float(remb)
        if now > 17.0:
            queue_at_end.append(arrival - now - path.delay)
        now += PACKET * 8 / sending
    assert 600_000 <= sending <= 1_100_000
    assert max(queue_at_end) < 0.1  # no standing queue: under 100 ms over the last 5 s


def test_the_first_decrease_after_a_ceiling_drops_lands_under_it():
    """Clean at 3 Mb/s, then a 2 Mb/s ceiling: the 1 s window still holds the pre-drop
    rate (0.85x of it is over the ceiling); the decrease takes the last 0.1 s instead."""
    estimate = DelayBasedEstimate()
    path = Path(capacity=None)
    stream(estimate, path, seconds=4.0, rate=3_000_000)
    assert estimate.detector.overuses == 0
    path.capacity = 2_000_000
    now, first_drop = 4.0, None
    while now < 6.0 and first_drop is None:
        arrival = path.arrival(now, PACKET)
        remb = estimate.on_packet(arrival, abs_send_time(now), PACKET)
        if remb is not None and estimate.rate.decreases:
            first_drop = (remb, arrival - now - path.delay)
        now += PACKET * 8 / 3_000_000
    assert first_drop is not None
    remb, queued = first_drop
    assert remb < 2_000_000  # one REMB: under the ceiling, the queue drains from here
    assert queued < 0.2  # found within a 200 ms queue


def test_recent_incoming_is_the_rate_over_its_windows_packets():
    estimate = DelayBasedEstimate()
    for i in range(100):  # 1200 B every 10 ms: 960 kb/s
        estimate.on_packet(i * 0.01, abs_send_time(i * 0.01), PACKET)
    assert estimate.recent_incoming(0.99) == pytest.approx(960_000, rel=0.01)
    assert estimate.recent_incoming(0.99, window=0.03) is None  # 3 packets: too few
    assert estimate.recent_incoming(1.5) is None  # nothing arrived in the window


def test_the_rate_climbs_back_when_the_ceiling_lifts():
    estimate = DelayBasedEstimate()
    path = Path(capacity=1_000_000)
    now, sending, lifted_at = 0.0, 1_500_000.0, 10.0
    reached = None
    while now < 30.0:
        if now >= lifted_at:
            path.capacity = None
        remb = estimate.on_packet(path.arrival(now, PACKET), abs_send_time(now), PACKET)
        if remb is not None:
            sending = min(float(remb), 3_000_000.0)  # the encoder's own ceiling
            if now > lifted_at and sending >= 2_000_000 and reached is None:
                reached = now
        now += PACKET * 8 / sending
    assert reached is not None and reached - lifted_at <= 10.0


def test_aimd_holds_on_underuse_and_never_runs_far_ahead_of_what_arrives():
    aimd = AimdRate()
    assert aimd.update(Usage.NORMAL, 1_000_000, now=0.0) is None  # not known yet
    assert aimd.update(Usage.NORMAL, 1_000_000, now=2.0) == 1_000_000
    for k in range(1, 20):
        aimd.update(Usage.NORMAL, 500_000, now=2.0 + k)
    assert aimd.rate == pytest.approx(1_000_000)  # 1.5x 500 k + 10 k is under it: held
    aimd.update(Usage.OVERUSE, 800_000, now=30.0)
    assert aimd.rate == pytest.approx(680_000) and aimd.capacity == 800_000
    aimd.update(Usage.UNDERUSE, 800_000, now=31.0)
    assert aimd.rate == pytest.approx(680_000)


def test_trendline_threshold_follows_a_noisy_path():
    detector = Trendline()
    rng = random.Random(3)
    arrival = previous = 0.0
    for k in range(1, 2000):  # each arrival up to 8 ms late, in order
        arrival = max(previous, 20.0 * k + rng.uniform(0, 8))
        detector.update(arrival - previous, 20, arrival)
        previous = arrival
    assert detector.overuses == 0 and detector.threshold >= 6.0


def test_aimd_creeps_near_the_capacity_then_forgets_it():
    aimd = AimdRate()
    aimd.update(Usage.OVERUSE, 1_000_000, now=0.0)  # first: the rate is what arrives, cut
    assert aimd.rate == pytest.approx(850_000) and aimd.capacity == 1_000_000
    aimd.update(Usage.NORMAL, 850_000, now=1.0)
    for k in range(1, 5):
        aimd.update(Usage.NORMAL, aimd.rate, now=1.0 + k)
    assert 850_000 < aimd.rate < 1_050_000  # additive near the capacity: ~45 kb/s a second
    crept = aimd.rate
    for k in range(5, 8):
        aimd.update(Usage.NORMAL, aimd.rate, now=1.0 + k)
    assert aimd.capacity is None and aimd.rate > crept * 1.3  # multiplicative again


def test_aimd_takes_the_short_window_only_for_an_overuses_first_decrease():
    """Later decreases of the same overuse would read the queue draining at the lowered
    send rate over 0.1 s and cascade down (720p10 under a 2 Mb/s ceiling); they take the
    1 s window, and a new overuse its short window again."""
    aimd = AimdRate()
    aimd.update(Usage.OVERUSE, 3_000_000, now=0.0)  # known: 2.55 Mb/s
    aimd.update(Usage.NORMAL, 3_000_000, now=0.5)
    aimd.update(Usage.OVERUSE, 2_900_000, now=0.7, recent=2_000_000)
    assert aimd.rate == pytest.approx(1_700_000)  # 0.85x the short window
    aimd.update(Usage.OVERUSE, 2_700_000, now=0.9, recent=1_200_000)
    assert aimd.rate == pytest.approx(1_700_000)  # not 0.85x the drained 1.2 Mb/s
    aimd.update(Usage.NORMAL, 1_900_000, now=1.0)
    aimd.update(Usage.OVERUSE, 1_900_000, now=1.5, recent=1_500_000)
    assert aimd.rate == pytest.approx(1_275_000)  # a new overuse: its first decrease
    aimd.update(Usage.NORMAL, 1_500_000, now=2.0)
    aimd.update(Usage.OVERUSE, 1_500_000, now=2.5, recent=1_350_000)
    assert aimd.rate == pytest.approx(1_275_000)  # 0.9x the 1 s window: noise, 0.85x that


def test_a_sender_following_the_remb_climbs_from_a_quarter_within_ten_seconds():
    """A clean path and an encoder that starts at 500 kb/s and sends what the REMB says:
    the REMB reaches 2 Mb/s (4x) within 10 s (at 15 %/s it took ~12 s, the first 2 s
    spent learning the rate)."""
    estimate = DelayBasedEstimate()
    path = Path(capacity=None, jitter=0.002)
    now, sending, reached = 0.0, 500_000.0, None
    while now < 12.0 and reached is None:
        remb = estimate.on_packet(path.arrival(now, PACKET), abs_send_time(now), PACKET)
        if remb is not None:
            sending = min(float(remb), 2_500_000.0)
            if sending >= 2_000_000:
                reached = now
        now += PACKET * 8 / sending
    assert estimate.detector.overuses == 0
    assert reached is not None and reached <= 10.0


def test_a_pause_starts_the_stream_afresh_and_keeps_the_rate():
    """After a 3 s pause the rate window is empty: an overuse read then must not take
    0.85x of the few packets since the pause (the estimate fell to its floor, and a
    30 fps picture resumed at 10 fps under the ladder)."""
    estimate = DelayBasedEstimate()
    path = Path(capacity=None)
    stream(estimate, path, 6.0, 1_000_000)
    before = estimate.rate.rate
    assert before is not None and before > 800_000
    # resume into a short queue: 0.4 s over a 0.5 Mb/s bottleneck (a real overuse, read
    # on a window that holds only what came since the pause)
    stream(estimate, Path(capacity=500_000), 0.4, 1_000_000, start=9.0)
    assert estimate.restarts == 1
    after = estimate.rate.rate
    assert after is not None and after >= 0.5 * before, (before, after)


def test_queue_delay_is_the_one_way_delay_over_its_floor():
    """Through a clean path the queue reads ~0 (jitter only); behind a ceiling it reads the
    queue's growth; once the sender fits, it drains back to ~0."""
    estimate = DelayBasedEstimate()
    path = Path(capacity=1_000_000, jitter=0.002)
    stream(estimate, path, seconds=3.0, rate=800_000)
    assert estimate.queue_delay < 0.005
    stream(estimate, path, seconds=0.5, rate=1_500_000, start=3.0)  # 0.5 s at 1.5x
    assert 0.2 < estimate.queue_delay < 0.3  # ~0.25 s queued
    assert estimate.stats()["queue_delay_ms"] == pytest.approx(estimate.queue_delay * 1000, abs=0.1)
    stream(estimate, path, seconds=3.0, rate=500_000, start=3.5)
    assert estimate.queue_delay < 0.005
