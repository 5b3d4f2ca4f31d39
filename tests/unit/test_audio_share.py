"""The audio's share of the path (rtc/congestion/audio_share.py) on synthetic reports, and
the Opus encoder taking a new rate in place (rtc/opus.py)."""

from __future__ import annotations

import numpy as np
import pytest
from aiortc.codecs import CODECS, get_encoder

from scope_relay.media.audio import s16_frame
from scope_relay.rtc import libopus
from scope_relay.rtc.congestion.audio_share import (
    DOWN_HOLD,
    STEPS,
    UP_HOLD,
    YIELD_HOLD,
    AudioShare,
    VideoShare,
)
from scope_relay.rtc.opus import MusicOpusEncoder, configure_opus

FLOOR = 50_000
AT_FLOOR = VideoShare(FLOOR, FLOOR)
RTT, QUEUED = 0.06, 0.26  # a clean round trip, and one behind a full 200 ms queue


def run(share: AudioShare, seconds: float, start: float, loss: float,
        video: VideoShare | None, rtt: float = QUEUED) -> float:
    """One report a second for ``seconds``; returns the clock after them."""
    now = start
    while now < start + seconds:
        share.update(now, loss, video, rtt)
        now += 1.0
    return now


def test_audio_steps_down_only_once_the_video_is_at_its_floor():
    share = AudioShare(128_000, with_video=True)
    share.update(0.0, 0.0, AT_FLOOR, RTT)  # (the least round trip seen)
    now = run(share, 10, 1.0, 0.4, VideoShare(400_000, FLOOR))
    assert share.bitrate == 128_000  # the video has rate to give: it gives way first
    now = run(share, 10, now, 0.4, AT_FLOOR)
    assert share.bitrate == STEPS[-1]  # at its floor: Opus goes down to its own
    assert share.steps_down >= 3  # (in steps, two at a time under heavy loss)


def test_the_video_yields_under_its_floor_once_the_audio_starves_at_its_own():
    share = AudioShare(128_000, with_video=True)
    share.update(0.0, 0.0, AT_FLOOR, RTT)
    now = run(share, 6, 1.0, 0.4, AT_FLOOR)
    assert share.bitrate == STEPS[-1] and not share.video_yields  # (just got there)
    now = run(share, YIELD_HOLD + 1, now, 0.3, AT_FLOOR)
    assert share.video_yields and share.yields == 1
    low = VideoShare(20_000, 16_000)  # the video under its own floor: the path fits
    now = run(share, UP_HOLD - 2, now, 0.0, low, rtt=RTT)
    assert share.video_yields  # held while the video is not clear of its (lowered) floor
    run(share, UP_HOLD, now, 0.0, VideoShare(60_000, 16_000), rtt=RTT)
    assert share.bitrate == STEPS[-2] and not share.video_yields  # room: audio first


def test_random_loss_without_a_queue_keeps_the_rate():
    """Loss with a flat round trip is not a ceiling: a lower rate would not help."""
    share = AudioShare(128_000, with_video=False)
    run(share, 20, 0.0, 0.1, None, rtt=RTT)
    assert share.bitrate == 128_000 and share.steps_down == 0


def test_heavy_loss_counts_without_a_queue_seen():
    """A ceiling from the start: the least round trip seen already has the queue in it."""
    share = AudioShare(128_000, with_video=False)
    run(share, 4, 0.0, 0.4, None, rtt=QUEUED)
    assert share.bitrate < 64_000


def test_nothing_moves_before_the_videos_estimate_is_known():
    share = AudioShare(128_000, with_video=True)
    share.update(0.0, 0.0, None, RTT)
    run(share, 10, 1.0, 0.5, None)
    assert share.bitrate == 128_000


def test_audio_only_follows_its_own_loss_down_one_step_per_hold():
    share = AudioShare(128_000, with_video=False)
    share.update(0.0, 0.0, None, RTT)
    assert share.update(1.0, 0.08, None, QUEUED) == 96_000
    assert share.update(1.0 + DOWN_HOLD / 2, 0.08, None, QUEUED) == 96_000  # (held)
    assert share.update(1.0 + DOWN_HOLD, 0.08, None, QUEUED) == 64_000


def test_it_climbs_back_when_the_path_allows_and_backs_off_a_failed_probe():
    share = AudioShare(128_000, with_video=True)
    share.update(0.0, 0.0, AT_FLOOR, RTT)
    now = run(share, 10, 1.0, 0.4, AT_FLOOR)
    assert share.bitrate == STEPS[-1]
    # clean, but the video still at its floor: nothing to take back from it
    now = run(share, 2 * UP_HOLD, now, 0.0, AT_FLOOR, rtt=RTT)
    assert share.bitrate == STEPS[-1]
    # the video's estimate climbs well clear of its floor: audio first (the path has been
    # clean for long: at once), then a step per hold
    now = run(share, 1, now, 0.0, VideoShare(500_000, FLOOR), rtt=RTT)
    assert share.bitrate == STEPS[-2] and share.steps_up == 1
    # a probe that meets loss at once: down again, and the next try waits twice as long
    now = run(share, 1, now + DOWN_HOLD, 0.3, AT_FLOOR, QUEUED)
    assert share.bitrate == STEPS[-1] and share.failed_probes == 1
    assert share.up_hold == 2 * UP_HOLD
    now = run(share, UP_HOLD + 2, now, 0.0, VideoShare(500_000, FLOOR), rtt=RTT)
    assert share.bitrate == STEPS[-1]  # not yet: the doubled hold
    now = run(share, UP_HOLD, now, 0.0, VideoShare(500_000, FLOOR), rtt=RTT)
    assert share.bitrate == STEPS[-2]
    now = run(share, UP_HOLD - 2, now, 0.0, VideoShare(500_000, FLOOR), rtt=RTT)
    assert share.bitrate == STEPS[-2]  # a step per hold
    run(share, 8 * UP_HOLD, now, 0.0, VideoShare(2_000_000, FLOOR), rtt=RTT)
    assert share.bitrate == 128_000  # all the way back, the hold reset by steps that held
    assert share.up_hold == UP_HOLD


def test_steps_start_at_the_sessions_own_rate():
    assert AudioShare(96_000, with_video=False).steps == (96_000, 64_000, 48_000, 32_000, 24_000)
    assert AudioShare(100_000, with_video=False).steps[:2] == (100_000, 96_000)
    assert AudioShare(16_000, with_video=False).steps == (16_000,)


def opus_codec():
    return next(c for c in CODECS["audio"] if c.mimeType == "audio/opus")


def packet_bytes(encoder: MusicOpusEncoder, frames: int, start: int) -> list[int]:
    """Music-like stereo (noise over a changing tone), 20 ms frames from ``start``."""
    rng = np.random.default_rng(start)
    sizes = []
    for k in range(start, start + frames):
        music = rng.normal(0, 0.2, (2, 960)) + np.sin(np.arange(960) * 0.05 * (k % 7 + 1))
        samples = np.clip(music * 8000, -32768, 32767).astype(np.int16)
        payloads, _ = encoder.encode(s16_frame(samples, k * 960))
        sizes += [len(p) for p in payloads]
    return sizes


@pytest.mark.skipif(not libopus.encoder_available(), reason="PyAV's Opus: no rate change")
def test_the_encoder_takes_a_new_rate_in_place():
    """One encoder, its rate set down and up between frames: packets follow at once, every
    frame still makes one packet (no reopen: the RTP timeline and the codec's state go on)."""
    configure_opus(128_000)
    encoder = get_encoder(opus_codec())
    assert isinstance(encoder, MusicOpusEncoder)
    state = encoder._opus
    high = packet_bytes(encoder, 50, 0)
    assert encoder.set_bitrate(24_000)
    low = packet_bytes(encoder, 50, 50)
    assert encoder.set_bitrate(128_000)
    back = packet_bytes(encoder, 50, 100)
    assert encoder._opus is state and encoder.bitrate_changes == 2
    assert len(high) == len(low) == len(back) == 50
    assert np.mean(low[5:]) < 0.35 * np.mean(high[5:])  # 24 vs 128 kb/s (+ VBR's spread)
    assert np.mean(back[5:]) > 0.8 * np.mean(high[5:])
    with pytest.raises(ValueError):
        encoder.set_bitrate(1_000)


class FakeAudioSender:
    """What AudioPath reads of aiortc's RTCRtpSender: its SSRC, encoder, count and RTT."""

    def __init__(self, encoder: MusicOpusEncoder):
        self._ssrc = 1234
        self._RTCRtpSender__encoder = encoder
        self._RTCRtpSender__packet_count = 0
        self._RTCRtpSender__rtt: float | None = None


def report(ssrc: int, fraction_lost: int):
    from aiortc.rtp import RtcpReceiverInfo, RtcpRrPacket

    return RtcpRrPacket(ssrc=9, reports=[RtcpReceiverInfo(
        ssrc=ssrc, fraction_lost=fraction_lost, packets_lost=0, highest_sequence=0,
        jitter=0, lsr=0, dlsr=0)])


@pytest.mark.skipif(not libopus.encoder_available(), reason="PyAV's Opus: no rate change")
def test_receiver_reports_set_the_encoders_rate_and_the_figures():
    """The wiring (rtc/opus.py ``AudioPath``): a real encoder behind a sender, reports of
    heavy loss behind a queue with the video at its floor -> libopus encodes lower."""
    from aiortc.rtp import RtcpRtpfbPacket

    from scope_relay.rtc.opus import AudioPath

    configure_opus(128_000)
    encoder = get_encoder(opus_codec())
    sender = FakeAudioSender(encoder)
    now = [0.0]
    path = AudioPath(sender, lambda: AT_FLOOR, clock=lambda: now[0])
    sender._RTCRtpSender__rtt = RTT
    path.on_rtcp(report(1234, 0))
    path.on_rtcp(report(999, 200))  # another stream's report: not ours
    assert encoder.current_bitrate == 128_000 and path.receiver_reports == 1
    sender._RTCRtpSender__rtt = QUEUED
    for _ in range(4):  # 0 in the reports (retransmissions arrived), 20 of 50 NACKed
        now[0] += DOWN_HOLD
        sender._RTCRtpSender__packet_count += 50
        path.on_rtcp(RtcpRtpfbPacket(fmt=1, ssrc=9, media_ssrc=1234,
                                     lost=list(range(sender._RTCRtpSender__packet_count,
                                                     sender._RTCRtpSender__packet_count + 20))))
        path.on_rtcp(report(1234, 0))
    stats = path.stats()
    assert encoder.current_bitrate == STEPS[-1] == stats["encoder_bitrate"] == stats["bitrate"]
    assert stats["bitrate_steps_down"] >= 2 and stats["reported_loss"] == pytest.approx(0.4)
