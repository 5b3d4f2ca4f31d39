"""Mapping received pts to the sender's clock from RTCP sender reports.

The receiver here is a stand-in exposing the two aiortc internals the tap uses; the real
thing is exercised end to end in test_end_to_end (av-sync lip sync through both hops).
"""

from __future__ import annotations

from aiortc.rtp import RtcpSenderInfo, RtcpSrPacket

from scope_relay.local.playout.track_timing import TrackTimer
from scope_relay.rtc.sender_reports import NTP_UNIX_OFFSET, SenderReportTap


class Mapper:
    def __init__(self, origin):
        self._origin = origin


class StandInReceiver:
    def __init__(self, origin=None):
        self._RTCRtpReceiver__timestamp_mapper = Mapper(origin)
        self.forwarded = 0

    async def _handle_rtcp_packet(self, packet) -> None:
        self.forwarded += 1


def report(seconds: float, rtp: int, packets: int = 10) -> RtcpSrPacket:
    ntp = int((seconds + NTP_UNIX_OFFSET) * 2**32)
    return RtcpSrPacket(ssrc=1, sender_info=RtcpSenderInfo(
        ntp_timestamp=ntp, rtp_timestamp=rtp % 2**32, packet_count=packets, octet_count=100))


async def test_anchor_best_anchor_and_correction():
    receiver = StandInReceiver(origin=1_000_000)
    tap = SenderReportTap(receiver, 48_000)
    await receiver._handle_rtcp_packet(report(0.0, 0, packets=0))  # before the first packet
    assert not tap.synced and receiver.forwarded == 1  # ignored, but still passed to aiortc
    await receiver._handle_rtcp_packet(report(1000.010, 1_000_000 + 48_000))  # 10 ms late
    await receiver._handle_rtcp_packet(report(1001.000, 1_000_000 + 96_000))  # on time
    assert tap.synced and tap.reports == 2
    assert abs(tap.cloud_time(48_000) - 1000.010) < 1e-6  # the first anchor, stable
    assert abs(tap.best_time(48_000) - 1000.000) < 1e-6  # the best one
    assert abs(tap.correction() - 0.010) < 1e-6


async def test_rtp_wrap_around():
    origin = 2**32 - 4_800  # the first packet was 100 ms before the 32-bit clock wraps
    receiver = StandInReceiver(origin=origin)
    tap = SenderReportTap(receiver, 48_000)
    await receiver._handle_rtcp_packet(report(500.0, origin + 48_000))  # after the wrap
    assert abs(tap.cloud_time(48_000) - 500.0) < 1e-6
    assert abs(tap.cloud_time(0) - 499.0) < 1e-6


async def test_reports_wait_for_the_first_packet():
    receiver = StandInReceiver(origin=None)
    tap = SenderReportTap(receiver, 90_000)
    await receiver._handle_rtcp_packet(report(10.0, 900_000))
    assert tap.cloud_time(0) is None
    receiver._RTCRtpReceiver__timestamp_mapper._origin = 810_000
    assert abs(tap.cloud_time(90_000) - 10.0) < 1e-6


def test_timer_falls_back_to_arrival_after_timeout():
    timer = TrackTimer(StandInReceiver(origin=0), 48_000, sync_timeout=3.0)
    assert timer.cloud_time(0, arrival=100.0) is None  # held: a report may still come
    assert timer.cloud_time(48_000, arrival=101.0) is None
    assert timer.cloud_time(4 * 48_000, arrival=103.5) == 103.5  # gave up waiting
    assert timer.fallback is not None
    assert timer.cloud_time(5 * 48_000, arrival=104.7) == 104.5  # pts carry on


async def test_a_fallback_stays_on_the_other_tracks_clock():
    """Only one track without reports: its arrival times are moved onto the cloud clock the
    other track's reports define, or the shared offset would mix two clocks."""
    audio_receiver = StandInReceiver(origin=0)
    audio = TrackTimer(audio_receiver, 48_000, sync_timeout=3.0)
    video = TrackTimer(StandInReceiver(origin=0), 90_000, sync_timeout=3.0)
    audio.sibling, video.sibling = video, audio
    await audio_receiver._handle_rtcp_packet(report(5000.0, 0))  # cloud clock: 5000 s at pts 0
    assert audio.cloud_time(0, arrival=100.08) == 5000.0
    assert audio.cloud_time(48_000, arrival=101.05) == 5001.0  # transit 50 ms at best
    assert video.cloud_time(0, arrival=100.0) is None
    assert abs(video.cloud_time(4 * 90_000, arrival=104.05) - 5004.0) < 1e-9
    assert abs(video.cloud_time(5 * 90_000, arrival=105.2) - 5005.0) < 1e-9


async def test_a_fallback_moves_onto_the_other_tracks_clock_once_it_is_known():
    audio_receiver = StandInReceiver(origin=0)
    audio = TrackTimer(audio_receiver, 48_000, sync_timeout=3.0)
    video = TrackTimer(StandInReceiver(origin=0), 90_000, sync_timeout=3.0)
    audio.sibling, video.sibling = video, audio
    assert video.cloud_time(0, arrival=100.0) is None
    assert video.cloud_time(4 * 90_000, arrival=104.0) == 104.0  # nothing known yet: arrival
    await audio_receiver._handle_rtcp_packet(report(5000.0, 0))
    assert audio.cloud_time(48_000, arrival=104.55) == 5001.0  # transit: -4896.45 s
    assert abs(video.cloud_time(5 * 90_000, arrival=105.0) - (105.0 + 4896.45)) < 1e-6
