"""Cloud time for each received track: sender reports, or arrival times as a fallback."""

from __future__ import annotations

import collections
import logging
from typing import Any

from scope_relay.protocol.media import SAMPLE_RATE
from scope_relay.rtc.sender_reports import ArrivalClock, SenderReportTap

logger = logging.getLogger(__name__)


class TrackTimer:
    """Cloud time for one received track: sender reports, or arrival after a timeout."""

    def __init__(self, receiver: Any, clock_rate: int, sync_timeout: float):
        self.tap = SenderReportTap(receiver, clock_rate)
        self.fallback: ArrivalClock | None = None
        self.clock_rate = clock_rate
        self.sync_timeout = sync_timeout
        self.first_arrival: float | None = None
        self.pending: collections.deque = collections.deque()
        #: Video follows the audio timer's anchor error (see media_sync).
        self.follower_of: TrackTimer | None = None
        #: the other track's timer: its sender reports still place a fallback on cloud time
        self.sibling: TrackTimer | None = None
        #: smallest arrival minus cloud time seen on sender-report timing (network + clocks)
        self.min_transit: float | None = None

    def cloud_time(self, pts: int, arrival: float) -> float | None:
        if self.first_arrival is None:
            self.first_arrival = arrival
        if self.follower_of is None:
            t = self.tap.cloud_time(pts)
        else:  # video: best anchor, moved by the audio anchor's error
            t = self.tap.best_time(pts)
            if t is not None:
                t += self.follower_of.tap.correction()
        if t is not None:
            transit = arrival - t
            self.min_transit = transit if self.min_transit is None else min(self.min_transit, transit)
            return t
        if arrival - self.first_arrival > self.sync_timeout:
            if self.fallback is not None and self.fallback.transit == 0.0 and self.sibling \
                    and self.sibling.min_transit is not None:
                self.fallback = None  # the other track's clock is known now: move onto it
            if self.fallback is None:
                # Arrival times moved onto the cloud's clock through the other track's
                # reports when it has them, so both tracks stay on one clock (one offset).
                shift = self.sibling.min_transit if self.sibling else None
                logger.warning("no RTCP sender report in %.1f s: %s track timed by arrival%s",
                               self.sync_timeout, "audio" if self.clock_rate == SAMPLE_RATE
                               else "video", "" if shift is None else
                               ", on the other track's clock")
                self.fallback = ArrivalClock(self.clock_rate, shift or 0.0)
            return self.fallback.cloud_time(pts, arrival)
        return None
