"""Put both received tracks back on the cloud's one timeline, from its sender reports.

aiortc starts each received track's pts at 0 on its own, so pts cannot relate audio to
video. The cloud releases both tracks on one wall clock, and every RTCP sender report
pairs an RTP timestamp with that clock (NTP). :class:`SenderReportTap` hooks a receiver
to keep those pairs (aiortc keeps only the NTP part, for stats) and, with the receiver's
own RTP origin, maps a frame's pts to cloud wall-clock seconds.

Audio keeps the first report's anchor, so its samples are placed continuously (no
clicks); video follows the best anchor seen, shifted by the audio's known error, so the
two stay aligned to within the sender's scheduling jitter. It relies on two aiortc
internals (the receiver's RTCP entry point and its timestamp mapper); the test suite
exercises both, and both go through :mod:`.aiortc_internals`, whose test fails loudly if
an aiortc upgrade moves them.
"""

from __future__ import annotations

from typing import Any

from .aiortc_internals import rtp_origin, tap_rtcp

NTP_UNIX_OFFSET = 2_208_988_800


def ntp_to_unix(ntp: int) -> float:
    return (ntp >> 32) - NTP_UNIX_OFFSET + (ntp & 0xFFFFFFFF) / 2**32


class SenderReportTap:
    """Maps a received track's pts to the sender's wall clock from its sender reports.

    Each report gives an anchor ``ntp - pts / rate``. A report taken just after a late
    packet is biased late (never early), so the *smallest* anchor seen is the best one.
    :meth:`cloud_time` uses the first anchor and never moves (audio placed with it stays
    continuous); :meth:`best_time` uses the best one; :meth:`correction` is how far the
    first anchor is behind the best, for shifting another track to match.
    """

    def __init__(self, receiver: Any, clock_rate: int):
        self.receiver = receiver
        self.clock_rate = clock_rate
        self.reports = 0
        self._raw: list[tuple[float, int]] = []  # (sender seconds, rtp) until the origin is known
        self._first: float | None = None
        self._best: float | None = None
        self._last_pts = 0
        tap_rtcp(receiver, self._on_rtcp)

    def _on_rtcp(self, packet: Any) -> None:
        info = getattr(packet, "sender_info", None)
        # aiortc sends reports before its first packet too, with NTP 0: skip those
        if info is not None and info.ntp_timestamp and info.packet_count:
            self.reports += 1
            if len(self._raw) < 64:
                self._raw.append((ntp_to_unix(info.ntp_timestamp), info.rtp_timestamp))
            self._absorb()

    def _absorb(self) -> None:
        origin = rtp_origin(self.receiver)
        if origin is None or not self._raw:
            return
        for seconds, rtp in self._raw:
            pts = (rtp - origin) % 2**32
            if pts >= 2**31 and self._last_pts < 2**30:
                pts -= 2**32  # a report for a packet just before our first one
            while pts < self._last_pts - 2**31:
                pts += 2**32  # the 32-bit RTP clock wrapped
            self._last_pts = max(self._last_pts, pts)
            anchor = seconds - pts / self.clock_rate
            if self._first is None:
                self._first = anchor
            self._best = anchor if self._best is None else min(self._best, anchor)
        self._raw.clear()

    @property
    def synced(self) -> bool:
        self._absorb()
        return self._first is not None

    def cloud_time(self, pts: int) -> float | None:
        """Sender seconds of ``pts`` on the first anchor (stable), or ``None`` until known."""
        self._absorb()
        return None if self._first is None else self._first + pts / self.clock_rate

    def best_time(self, pts: int) -> float | None:
        self._absorb()
        return None if self._best is None else self._best + pts / self.clock_rate

    def correction(self) -> float:
        self._absorb()
        if self._first is None or self._best is None:
            return 0.0
        return self._first - self._best


class ArrivalClock:
    """Fallback when no sender report comes: the arrival time of the first frame it sees,
    less ``transit`` (what the other track's reports say arrival minus cloud time is, or 0
    with none), is that frame's cloud time, and pts carry on from there. Sync is then only
    as good as the two tracks' receive buffering (~80 ms for aiortc's audio)."""

    def __init__(self, clock_rate: int, transit: float = 0.0):
        self.clock_rate = clock_rate
        self.transit = transit
        self._anchor: tuple[int, float] | None = None

    def cloud_time(self, pts: int, arrival: float) -> float:
        if self._anchor is None:
            self._anchor = (pts, arrival - self.transit)
        return self._anchor[1] + (pts - self._anchor[0]) / self.clock_rate
