"""rtc/congestion on synthetic feedback: the estimate (REMB + receiver reports), the
ladder of frame rates and sizes, the frame skipper and the pacer on a fake clock."""

from __future__ import annotations

import asyncio

import pytest

from scope_relay.rtc.congestion.estimate import BandwidthEstimate
from scope_relay.rtc.congestion.ladder import FrameSkipper, Ladder
from scope_relay.rtc.congestion.pacer import Pacer
from scope_relay.rtc.video_encoder import default_video_bitrate

FLOOR, CEILING = 50_000, 2_000_000


def estimate(congested: bool = True) -> BandwidthEstimate:
    """An estimate whose receiver reports say the path queues (a REMB's overuse counts)."""
    e = BandwidthEstimate(FLOOR, CEILING)
    if congested:
        e.on_loss_report(0.0, now=-10.0, sent=None, rtt=0.05)
        e.on_loss_report(0.0, now=-9.0, sent=None, rtt=0.15)
    return e


def test_no_feedback_is_the_ceiling():
    assert estimate().value == CEILING


def test_a_remb_is_the_delay_based_limit_and_a_fall_is_an_overuse():
    """Our receiver's REMB (rtc.congestion.delay_based) is taken at its word: no
    "only if the receiver reports confirm it" guard any more."""
    e = estimate(congested=False)
    e.on_delay_estimate(1_500_000, sent=1_700_000, now=0.0)
    assert e.value == 1_500_000 and e.overuses == 0
    e.on_delay_estimate(850_000, sent=1_500_000, now=0.5)  # the receiver's decrease
    assert e.value == 850_000 and e.overuses == 1
    e.on_delay_estimate(900_000, sent=850_000, now=1.5)  # its additive climb back
    assert e.value == 900_000 and e.overuses == 1
    e.on_delay_estimate(3_000_000, sent=1_900_000, now=10.0)  # past the ceiling: no limit
    assert e.delay_based is None and e.value == CEILING


def test_an_application_limited_encoder_is_not_pulled_down_by_the_receivers_cap():
    """The receiver caps its estimate at 1.5x what arrives; an encoder sending 2/3 of its
    target (libx264 under VBV) or a quiet picture must not be held there."""
    e = estimate(congested=False)
    e.on_delay_estimate(1_000_000, sent=1_000_000, now=0.0)
    now = 0.0
    while e.value < CEILING and now < 30:
        now += 1.0
        sent = 0.5 * e.value
        e.on_delay_estimate(1.5 * sent + 10_000, sent=sent, now=now)
    assert e.value == CEILING and now <= 6  # 15 %/s


def test_a_quiet_picture_does_not_drag_the_limit_down():
    e = estimate(congested=False)
    e.on_delay_estimate(1_000_000, sent=1_000_000, now=0.0)
    e.on_delay_estimate(800_000, sent=1_000_000, now=1.0)  # an overuse: 800 k
    e.on_delay_estimate(800_000, sent=200_000, now=2.0)  # we send little: held, not cut
    assert e.value == 800_000


def test_remb_below_the_floor_stops_at_the_floor():
    e = estimate()
    e.on_delay_estimate(500_000, sent=50_000, now=0.0)
    e.on_delay_estimate(1_000, sent=50_000, now=1.0)
    assert e.value == FLOOR


def test_high_loss_decreases_by_half_the_loss_once_per_interval():
    e = estimate()
    e.on_loss_report(0.30, now=0.0, sent=1_500_000)
    assert e.value == pytest.approx(1_500_000 * (1 - 0.15), rel=1e-6)
    e.on_loss_report(0.30, now=1.0, sent=1_500_000)  # the report after: the same event
    assert e.value == pytest.approx(1_275_000, rel=1e-6)
    e.on_loss_report(0.30, now=1.5, sent=1_200_000)  # a new one, from what was sent
    assert e.value == pytest.approx(1_200_000 * 0.85, rel=1e-6)
    assert e.decreases == 2


def test_moderate_loss_holds_and_low_loss_grows_up_to_what_is_sent():
    e = estimate()
    e.on_loss_report(0.20, now=0.0, sent=1_000_000)
    held = e.value
    assert held == 900_000
    e.on_loss_report(0.05, now=1.0, sent=900_000)
    assert e.value == held  # between 2 and 10 %: hold
    e.on_loss_report(0.0, now=2.0, sent=900_000)
    assert held < e.value <= held * 1.16
    for k in range(3, 20):  # the encoder sends only 700 kb/s: no further than 1.5x that
        e.on_loss_report(0.0, now=float(k), sent=700_000)
    assert e.value == pytest.approx(1_050_000, rel=0.01)


def test_low_loss_climbs_back_to_the_ceiling_within_about_ten_seconds():
    """A ceiling lifted: from 40 % of the ceiling, with the encoder sending what it is
    allowed (the goal: the rate back within 10 s; the creep near the rate that lost
    costs a second or two of it)."""
    e = estimate()
    e.on_loss_report(0.9, now=0.0, sent=1_450_000)  # 1.45 M * 0.55 = 800 k
    assert e.value == pytest.approx(797_500, rel=1e-3)
    now = 0.0
    while e.value < CEILING and now < 30:
        now += 1.0
        e.on_loss_report(0.0, now=now, sent=e.value)
    # 15 %/s up to 0.9x the rate that lost, 5 % of it a second past that (AIMD's creep)
    assert now <= 12 and e.loss_based is None


def test_an_encoder_under_its_target_does_not_pin_the_limit():
    """libx264 under VBV sends ~2/3 of its target (issue 27): from the cloud's start at
    25 % of the ceiling, with no loss the limit still climbs to the ceiling; capping it at
    1.5x what is sent held it at ~1.0x forever (0.46 Mb/s, 15 fps at 720p30)."""
    e = estimate(congested=False)
    e.loss_based = 0.25 * CEILING
    now = 0.0
    while e.value < CEILING and now < 30:
        now += 1.0
        e.on_loss_report(0.0, now=now, sent=0.67 * e.value, rtt=0.001)
    assert e.loss_based is None and now <= 11  # 15 %/s from a quarter: ~10 s


def test_after_a_loss_decrease_an_undershooting_encoder_caps_the_limit_again():
    e = estimate(congested=False)
    e.on_loss_report(0.3, now=0.0, sent=1_000_000)  # 850 k, a congestion signal
    for k in range(1, 15):
        e.on_loss_report(0.0, now=float(k), sent=500_000)
    assert e.value == 850_000  # held: 1.5x what is sent is under it


def test_the_lower_of_the_two_wins():
    e = estimate()
    e.on_delay_estimate(1_000_000, sent=1_000_000, now=0.0)
    e.on_delay_estimate(800_000, sent=1_000_000, now=1.0)  # 800 k
    e.on_loss_report(0.5, now=1.0, sent=1_000_000)  # 750 k
    assert e.value == 750_000
    e.on_loss_report(0.0, now=2.0, sent=750_000)
    e.on_delay_estimate(700_000, sent=750_000, now=2.0)  # a further overuse: 700 k
    assert e.value == 700_000


def test_no_reports_after_some_halve_the_estimate_each_second():
    e = estimate(congested=False)
    e.on_silence(now=100.0)  # no report ever (a receiver that sends none): nothing
    assert e.value == CEILING
    e.on_loss_report(0.0, now=0.0, sent=1_000_000)
    e.on_silence(now=2.0)
    assert e.value == CEILING
    for now in (3.5, 3.9, 4.6, 5.7):
        e.on_silence(now=now)
    assert e.value == CEILING // 8 and e.silence_cuts == 3
    e.on_loss_report(0.0, now=6.0, sent=200_000)  # reports again: grows back
    e.on_silence(now=7.0)
    assert e.value > CEILING // 8


LADDER_NEED = default_video_bitrate


def test_ladder_steps_down_frame_rate_then_size_and_back_with_hysteresis():
    ladder = Ladder(LADDER_NEED)
    w, h, fps = 1280, 720, 30.0
    need = LADDER_NEED(w, h, fps)
    assert ladder.update(int(0.5 * need), w, h, fps, now=0.0) == 0  # bitrate only
    assert ladder.update(int(0.3 * need), w, h, fps, now=1.0) == 0  # not held long enough
    assert ladder.update(int(0.3 * need), w, h, fps, now=3.1) == 1
    assert ladder.picture(1, w, h, fps) == (1280, 720, 15.0)
    t = 3.1
    for step in (2, 3):
        t += 2.1
        ladder.update(20_000, w, h, fps, now=t - 2.1)
        assert ladder.update(20_000, w, h, fps, now=t) == step
    assert ladder.picture(3, w, h, fps) == (640, 360, 10.0)
    assert ladder.update(20_000, w, h, fps, now=t + 10) == 3  # the bottom
    # a rate well above the step's own down threshold, not yet the step above's: stays
    above = LADDER_NEED(1280, 720, 10.0)
    assert ladder.update(int(0.45 * above), w, h, fps, now=t + 20) == 3
    assert ladder.update(int(0.45 * above), w, h, fps, now=t + 40) == 3
    ladder.update(int(0.6 * above), w, h, fps, now=t + 50)
    assert ladder.update(int(0.6 * above), w, h, fps, now=t + 53) == 3  # held 3 s of 4
    assert ladder.update(int(0.6 * above), w, h, fps, now=t + 54.1) == 2
    assert ladder.moves == 4


def test_ladder_skips_steps_that_change_nothing():
    ladder = Ladder(LADDER_NEED)
    ladder.update(10_000, 1280, 720, 15.0, now=0.0)
    assert ladder.update(10_000, 1280, 720, 15.0, now=2.5) == 2  # 15 fps: straight to 10
    assert ladder.picture(2, 1280, 720, 15.0) == (1280, 720, 10.0)


@pytest.mark.parametrize(("source", "kept", "expected"), [(30.0, 15.0, 15), (30.0, 10.0, 10),
                                                          (15.0, 10.0, 10), (24.0, 15.0, 15)])
def test_frame_skipper_keeps_the_rate_asked_for_evenly(source, kept, expected):
    skipper = FrameSkipper()
    times = [k / source for k in range(int(source) * 4)]  # 4 s
    keep = [t for t in times if skipper.keep(t, kept)]
    assert abs(len(keep) / 4 - expected) <= 0.5
    gaps = [b - a for a, b in zip(keep, keep[1:], strict=False)]
    assert max(gaps) <= 2.01 / source + 1e-9 or max(gaps) <= 1.5 / kept


def test_frame_skipper_takes_a_wanted_keyframe_at_once_and_keeps_the_rate():
    skipper = FrameSkipper()
    assert skipper.keep(0.0, 10.0)  # 30 fps kept at 10: slots at 0, 0.1, 0.2...
    assert not skipper.keep(1 / 30, 10.0)
    assert skipper.keep(2 / 30, 10.0, now=True)  # a keyframe asked for: not held to 0.1
    assert not skipper.keep(0.1, 10.0)  # and the next slot counts from it
    assert not skipper.keep(4 / 30, 10.0)
    assert skipper.keep(5 / 30, 10.0)


def test_frame_skipper_passes_everything_without_a_rate():
    skipper = FrameSkipper()
    assert all(skipper.keep(k / 30, None) for k in range(30))




async def test_pacer_spreads_a_burst_at_its_rate_and_counts_what_it_drops():
    sent: list[tuple[float, int]] = []
    loop = asyncio.get_running_loop()
    start = loop.time()

    async def send(data: bytes) -> None:
        sent.append((loop.time() - start, len(data)))

    pacer = Pacer(lambda: 1_000_000, send, max_delay=0.2)  # 1 Mb/s, 200 ms of queue
    for _ in range(30):  # 30 x 1000 B = 240 ms at 1 Mb/s: the last 5 do not fit
        pacer.enqueue(b"x" * 1000)
    assert pacer.dropped_packets == 5 and len(pacer) == 25
    assert pacer.backlog() == pytest.approx(0.2)
    task = asyncio.create_task(pacer.run())
    try:
        deadline = loop.time() + 5
        while len(sent) < 25 and loop.time() < deadline:
            await asyncio.sleep(0.01)
    finally:
        task.cancel()
    assert len(sent) == 25
    span = sent[-1][0] - sent[0][0]
    assert 0.15 <= span <= 0.5  # 24 packets x 8 ms, not all at once
    assert pacer.stats()["pacer_queue_delay_max_ms"] >= 150
    assert pacer.stats()["pacer_dropped_packets"] == 5


async def test_pacer_counts_a_refused_send_and_goes_on():
    calls = 0

    async def send(data: bytes) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("not connected")

    pacer = Pacer(lambda: 10_000_000, send)
    pacer.enqueue(b"a")
    pacer.enqueue(b"b")
    task = asyncio.create_task(pacer.run())
    try:
        for _ in range(100):
            if pacer.sent_packets == 1:
                break
            await asyncio.sleep(0.01)
    finally:
        task.cancel()
    assert pacer.send_errors == 1 and pacer.sent_packets == 1


async def test_send_feedback_gives_the_encoder_the_loss_before_repair():
    """A receiver report on a real sender reaches the encoder with the larger of its
    fraction lost and the share of packets NACKed since the last report (a report counts a
    retransmitted packet as received)."""
    from aiortc import RTCPeerConnection
    from aiortc.rtp import RtcpReceiverInfo, RtcpRrPacket, RtcpRtpfbPacket

    from scope_relay.rtc.ice import rtc_configuration
    from scope_relay.rtc.send_feedback import count_feedback

    class Encoder:
        def __init__(self) -> None:
            self.reports: list[float] = []

        def on_receiver_report(self, lost: float, rtt: float | None) -> None:
            self.reports.append(lost)

    pc = RTCPeerConnection(rtc_configuration())
    try:
        sender = pc.addTransceiver("video", direction="sendonly").sender
        encoder = sender._RTCRtpSender__encoder = Encoder()
        feedback = count_feedback(sender)

        def report(fraction: int) -> RtcpRrPacket:
            return RtcpRrPacket(ssrc=1, reports=[RtcpReceiverInfo(
                ssrc=sender._ssrc, fraction_lost=fraction, packets_lost=0, highest_sequence=0,
                jitter=0, lsr=0, dlsr=0)])

        sender._RTCRtpSender__packet_count = 100
        await sender._handle_rtcp_packet(report(0))
        sender._RTCRtpSender__packet_count = 200
        feedback.on_packet(RtcpRtpfbPacket(fmt=1, ssrc=1, media_ssrc=sender._ssrc,
                                           lost=list(range(30))))
        await sender._handle_rtcp_packet(report(0))  # 30 of 100 NACKed, none "lost"
        sender._RTCRtpSender__packet_count = 300
        await sender._handle_rtcp_packet(report(64))  # 25 % lost, nothing NACKed
        assert encoder.reports == [pytest.approx(0.0), pytest.approx(0.3), pytest.approx(0.25)]
        assert feedback.stats()["receiver_reports"] == 3
    finally:
        await pc.close()


async def test_a_requested_keyframe_leaves_at_once_and_the_rate_holds_after_it():
    """The packets of a keyframe a receiver asked for (and those queued before it) may run
    up to KEYFRAME_BURST_S ahead of the schedule; the packets after it still leave when
    they would have, so the long-run rate is the pacing rate. Its departure is noted (the
    stats' timeline: benchmarks/keyframe_latency.py's pacer stage)."""
    sent: list[tuple[float, bytes]] = []
    loop = asyncio.get_running_loop()
    start = loop.time()

    async def send(data: bytes) -> None:
        sent.append((loop.time() - start, data))

    pacer = Pacer(lambda: 1_000_000, send)  # 1 Mb/s: 8 ms a 1000-byte packet
    pacer.enqueue(b"d" * 1000)
    pacer.expect_requested_keyframe(8)  # 64 ms at the pacing rate
    for _ in range(8):
        pacer.enqueue(b"k" * 1000)
    pacer.enqueue(b"n" * 1000)
    task = asyncio.create_task(pacer.run())
    try:
        deadline = loop.time() + 5
        while len(sent) < 10 and loop.time() < deadline:
            await asyncio.sleep(0.01)
    finally:
        task.cancel()
    assert [data[:1] for _, data in sent] == [b"d"] + [b"k"] * 8 + [b"n"]
    assert sent[8][0] < 0.04  # the keyframe whole well before 72 ms of pacing
    assert sent[9][0] >= 0.07  # the next packet on the schedule: 9 packets x 8 ms
    stats = pacer.stats()
    assert stats["pacer_keyframe_bursts"] == 1
    assert len(stats["pacer_keyframes_sent_monotonic"]) == 1


async def test_audio_made_during_a_keyframe_burst_goes_between_its_packets():
    """The pacer yields between a requested keyframe's packets: another task (the audio
    sender, which the pacer does not hold) runs between them, not after the last."""
    order: list[str] = []

    async def send(data: bytes) -> None:
        order.append("video")

    async def audio() -> None:
        while True:
            order.append("audio")
            await asyncio.sleep(0)

    pacer = Pacer(lambda: 1_000_000, send)
    pacer.expect_requested_keyframe(8)
    for _ in range(8):
        pacer.enqueue(b"k" * 1000)
    tasks = [asyncio.create_task(pacer.run()), asyncio.create_task(audio())]
    try:
        for _ in range(500):
            if order.count("video") == 8:
                break
            await asyncio.sleep(0.001)
    finally:
        for task in tasks:
            task.cancel()
    first, last = order.index("video"), len(order) - order[::-1].index("video") - 1
    assert order.count("video") == 8 and "audio" in order[first:last]


async def test_an_unrequested_keyframe_is_paced_like_any_frame():
    sent: list[float] = []
    loop = asyncio.get_running_loop()
    start = loop.time()

    async def send(data: bytes) -> None:
        sent.append(loop.time() - start)

    pacer = Pacer(lambda: 1_000_000, send)
    for _ in range(9):  # (a periodic keyframe: the encoder announces nothing)
        pacer.enqueue(b"k" * 1000)
    task = asyncio.create_task(pacer.run())
    try:
        deadline = loop.time() + 5
        while len(sent) < 9 and loop.time() < deadline:
            await asyncio.sleep(0.01)
    finally:
        task.cancel()
    assert sent[-1] >= 0.05 and pacer.stats()["pacer_keyframes_sent_monotonic"] == []
