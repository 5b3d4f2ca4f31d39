"""What a video sender's receiver asked of it: keyframes (PLI, FIR), lost packets (NACK)
and its bandwidth estimate (REMB), counted per sender for the stats; the receiver
reports' fraction lost goes to the encoder's bandwidth estimate (rtc.congestion)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aiortc.rtp import RtcpPsfbPacket, RtcpRrPacket, RtcpRtpfbPacket, RtcpSrPacket

from .aiortc_internals import sender_encoder, sender_packet_count, sender_rtt, tap_sender_rtcp

_PLI, _FIR, _REMB = 1, 4, 15  # RTCP payload-specific feedback formats (RFC 4585, 5104)
_NACK = 1  # transport-layer feedback: generic NACK
#: NACKed sequence numbers remembered between two receiver reports, at most
MAX_NACKED_SEEN = 8192


@dataclass(slots=True)
class SendFeedback:
    """Counted on one sender; :meth:`stats` adds its encoder's rate figures."""

    sender: Any = None
    plis: int = 0
    firs: int = 0
    nacks: int = 0  # NACK messages
    nacked_packets: int = 0  # packets they asked for again
    rembs: int = 0
    receiver_reports: int = 0
    #: packets sent at the last receiver report, and those NACKed since (each hole is
    #: asked for up to 3 times: counted once)
    _sent_at_report: int = 0
    _nacked_since: set[int] = field(default_factory=set)

    def on_packet(self, packet: Any) -> None:
        if isinstance(packet, (RtcpRrPacket, RtcpSrPacket)):
            ssrc = getattr(self.sender, "_ssrc", None)
            for report in packet.reports:
                if report.ssrc == ssrc:
                    self.receiver_reports += 1
                    encoder = sender_encoder(self.sender)
                    if encoder is not None and hasattr(encoder, "on_receiver_report"):
                        lost = max(report.fraction_lost / 256, self._nacked_share())
                        encoder.on_receiver_report(lost, sender_rtt(self.sender))
        elif isinstance(packet, RtcpPsfbPacket):
            if packet.fmt in (_PLI, _FIR):
                self.plis += packet.fmt == _PLI
                self.firs += packet.fmt == _FIR
                encoder = sender_encoder(self.sender)
                if encoder is not None and hasattr(encoder, "on_keyframe_request"):
                    encoder.on_keyframe_request()
            elif packet.fmt == _REMB:
                self.rembs += 1
        elif isinstance(packet, RtcpRtpfbPacket) and packet.fmt == _NACK:
            self.nacks += 1
            self.nacked_packets += len(packet.lost)
            if len(self._nacked_since) < MAX_NACKED_SEEN:
                self._nacked_since.update(packet.lost)

    def _nacked_share(self) -> float:
        """The share of the packets sent since the last report that the receiver asked
        for again. The report's own fraction lost counts a retransmitted packet as
        received, so a path whose losses NACKs repair reads as lossless there, however
        full its queue; what was lost before repair is what congestion control needs."""
        sent, last_sent = sender_packet_count(self.sender), self._sent_at_report
        nacked = len(self._nacked_since)
        self._sent_at_report = sent
        self._nacked_since.clear()
        return min(1.0, nacked / (sent - last_sent)) if sent > last_sent else 0.0

    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {"plis": self.plis, "firs": self.firs, "nacks": self.nacks,
                               "nacked_packets": self.nacked_packets, "rembs": self.rembs,
                               "receiver_reports": self.receiver_reports}
        encoder = sender_encoder(self.sender)
        if encoder is not None and hasattr(encoder, "stats"):
            out.update(encoder.stats())
        return out


def count_feedback(sender: Any) -> SendFeedback:
    """Count the feedback ``sender`` gets from now on."""
    feedback = SendFeedback(sender)
    tap_sender_rtcp(sender, feedback.on_packet)
    return feedback
