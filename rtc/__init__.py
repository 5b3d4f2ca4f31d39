"""Shared WebRTC code: ICE, Opus, SDP checks, sender-report timing, the peer skeleton, and
:mod:`.aiortc_internals`, the one module that reaches into aiortc's internals."""

from .ice import loopback_candidates, rtc_configuration
from .opus import configure_opus
from .peer import PeerSession
from .sender_reports import ArrivalClock, SenderReportTap

__all__ = ["ArrivalClock", "PeerSession", "SenderReportTap", "configure_opus",
           "loopback_candidates", "rtc_configuration"]
