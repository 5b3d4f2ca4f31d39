"""Put both received tracks back on the cloud's one timeline, from its sender reports.

aiortc starts each received track's pts at 0 on its own, so pts cannot relate audio to
video. The cloud releases both tracks on one wall clock, and every RTCP sender report
pairs an RTP timestamp with that clock (NTP). :class:`SenderReportTap` hooks a receiver
to keep those pairs (aiortc keeps only the NTP part, for stats) and, with the receiver's
own RTP origin, maps a frame's pts to cloud wall-clock seconds.

The mapping is anchored on the first sender report and then follows the pts, which are
continuous, so the placement of audio samples never jitters. It relies on two aiortc
internals (the receiver's RTCP entry point and its timestamp mapper); the test suite
exercises both so an aiortc upgrade that moves them fails loudly.
"""

from __future__ import annotations

import time
from typing import Any

NTP_UNIX_OFFSET = 2_208_988_800


def ntp_to_unix(ntp: int) -> float:
    return (ntp >> 32) - NTP_UNIX_OFFSET + (ntp & 0xFFFFFFFF) / 2**32


class SenderReportTap:
    def __init__(self, receiver: Any, clock_rate: int):
        self.receiver = receiver
        self.clock_rate = clock_rate
        self.reports = 0
        self._first_report: tuple[float, int] | None = None  # (cloud seconds, rtp)
        self._anchor: tuple[int, float] | None = None  # (pts, cloud seconds)
        original = receiver._handle_rtcp_packet

        async def handle_rtcp(packet) -> None:
            info = getattr(packet, "sender_info", None)
            if info is not None:
                self.reports += 1
                if self._first_report is None:
                    self._first_report = (ntp_to_unix(info.ntp_timestamp), info.rtp_timestamp)
            await original(packet)

        receiver._handle_rtcp_packet = handle_rtcp

    def _rtp_origin(self) -> int | None:
        mapper = getattr(self.receiver, "_RTCRtpReceiver__timestamp_mapper", None)
        return getattr(mapper, "_origin", None)

    @property
    def synced(self) -> bool:
        return self._anchor is not None or (
            self._first_report is not None and self._rtp_origin() is not None)

    def cloud_time(self, pts: int) -> float | None:
        """Cloud wall-clock seconds of a received frame's pts, or ``None`` until known."""
        if self._anchor is None:
            origin = self._rtp_origin()
            if self._first_report is None or origin is None:
                return None
            seconds, rtp = self._first_report
            # pts of the report's RTP time, unwrapped next to the origin
            delta = (rtp - origin) % 2**32
            if delta >= 2**31:
                delta -= 2**32
            self._anchor = (delta, seconds)
        anchor_pts, anchor_seconds = self._anchor
        return anchor_seconds + (pts - anchor_pts) / self.clock_rate


class ArrivalClock:
    """Fallback when no sender report comes: arrival time of a track's first frame is its
    cloud time (sync is then only as good as the two tracks' receive buffering)."""

    def __init__(self, clock_rate: int):
        self.clock_rate = clock_rate
        self._anchor: tuple[int, float] | None = None

    def cloud_time(self, pts: int) -> float:
        if self._anchor is None:
            self._anchor = (pts, time.time())
        return self._anchor[1] + (pts - self._anchor[0]) / self.clock_rate
