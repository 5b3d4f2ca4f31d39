"""The receive path for a lossy hop, installed on one aiortc receiver.

:func:`install_receive_path` swaps the receiver's jitter buffer for ours
(:mod:`.jitter`): packets are released the moment they are in order (no prefetch hold, a
video frame on its marker bit), a hole is NACKed at once and again while there is time,
and given up after a deadline of about one retransmission. Audio then decodes through
:mod:`.opus_decoder` (in-band FEC for a single loss, libopus concealment for the rest),
video skips to the next keyframe and sends a PLI. Audio is decoded right here on the
event loop; video goes to aiortc's decoder thread, or, where the relay forwards it
(:meth:`ReceivePath.forward_video`), whole and still encoded to a sink. aiortc keeps doing the rest (SRTP, RTX
unwrapping, depayloading, RTCP reports, the track).

Everything aiortc-private it needs is in :mod:`.aiortc_internals`.

Tuned for the round trip (:meth:`ReceivePath.attach_playout`): audio holes are decided
against the playout's budget (what can still be played), and while loss persists (a few
holes in ``LOSS_WINDOW``) the path asks the playout for the budget a retransmission needs
(the measured round trip plus the longest recent burst, at most ``BURST_COVER`` packets);
0 once it has stopped. Video tells the playout the queue its delay-based estimate sees on
the hop (:meth:`ReceivePath.watch_queue`): audio waits in that queue too.
"""

from __future__ import annotations

import logging
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiortc.jitterbuffer import JitterFrame

from . import aiortc_internals as internals
from .congestion.delay_based import DelayBasedEstimate
from .jitter import (
    RTX_MARGIN,
    RTX_RTT_FACTOR,
    AudioJitterBuffer,
    AudioUnit,
    VideoFrameData,
    VideoJitterBuffer,
)
from .opus_decoder import DecodeStats, LossAwareOpusDecoder, loss_aware_available

logger = logging.getLogger(__name__)

_H264_KEY_NAL_TYPES = frozenset({5, 7})  # IDR slice, sequence parameter set
#: loss persists while at least LOSS_PERSISTS holes were seen in the last LOSS_WINDOW s
LOSS_WINDOW = 10.0
LOSS_PERSISTS = 2
#: while it persists, a retransmission should still rescue the first packet of the
#: longest burst seen in the window, up to BURST_COVER packets (in-band FEC rebuilds the
#: last of a burst, retransmission the ones before it; bursts of mean 3 are 4 or longer a
#: third of the time), with HOLD_MARGIN to spare. Random loss (bursts of 1-2) needs little
#: room; a ~1 ms round trip then none.
BURST_COVER = 4
HOLD_MARGIN = 0.01
_warned_no_libopus = False
#: each receiver's path, for whoever decides later what its frames feed (forwarding)
_PATHS: weakref.WeakKeyDictionary[Any, ReceivePath] = weakref.WeakKeyDictionary()


@dataclass(slots=True)
class EncodedVideo:
    """One complete encoded video frame, handed on instead of decoded (forwarding)."""

    data: bytes
    #: the receiver's mapped RTP time: what a decoded frame's ``pts`` would have been
    pts: int
    keyframe: bool
    #: the codec, e.g. ``video/VP8``
    mime: str


def is_keyframe(mime_type: str, data: bytes) -> bool:
    """Whether an encoded frame starts a decodable sequence (unknown codecs: assume so)."""
    mime = mime_type.lower()
    if mime == "video/vp8":  # frame tag bit 0 clear + the keyframe start code
        return len(data) >= 6 and not data[0] & 1 and data[3:6] == b"\x9d\x01\x2a"
    if mime == "video/h264":  # Annex B as aiortc depayloads it: any IDR or SPS NAL unit
        at = data.find(b"\x00\x00\x01")
        while at != -1 and at + 3 < len(data):
            if data[at + 3] & 0x1F in _H264_KEY_NAL_TYPES:
                return True
            at = data.find(b"\x00\x00\x01", at + 3)
        return False
    return True


class ReceivePath:
    """One receiver's intake (aiortc calls :meth:`add` as its jitter buffer) and its
    feedback (NACK, PLI after each packet)."""

    def __init__(self, receiver: Any, kind: str, *, clock: Callable[[], float] = time.monotonic):
        self.receiver = receiver
        self.kind = kind
        self.media_ssrc: int | None = None
        self.clock = clock
        #: when the last RTP packet came (``clock`` time; None before the first)
        self.last_packet: float | None = None
        self._mime = ""
        self.buffer: AudioJitterBuffer | VideoJitterBuffer
        if kind == "audio":
            self.buffer = AudioJitterBuffer(clock=clock)
        else:
            self.buffer = VideoJitterBuffer(is_keyframe=lambda d: is_keyframe(self._mime, d),
                                            clock=clock)
        self.decoding = DecodeStats()
        self.loss_aware = kind == "audio" and loss_aware_available()
        self.unconcealed = 0  # lost audio units with no concealing decoder (silence)
        self.packets = 0  # RTP packets taken in (retransmissions included)
        #: video: our delay-based estimate, sent back as REMB (in place of aiortc's)
        self.delay = DelayBasedEstimate() if kind == "video" else None
        self.payload_bytes = 0  # their RTP payload bytes (a hop's media bitrate)
        self._decoders: dict[int, LossAwareOpusDecoder] = {}
        #: the playout's wish list: called with the hold a retransmission needs (0: none)
        self._want_hold: Callable[[float], None] | None = None
        #: video: told the hop's queue delay (s) after each packet with abs-send-time
        self._queue_watch: Callable[[float], None] | None = None
        #: video: complete encoded frames go here instead of to aiortc's decoder, for the
        #: codecs ``_forwards`` accepts (:meth:`forward_video`)
        self._forward: Callable[[EncodedVideo], None] | None = None
        self._forwards: Callable[[str], bool] = lambda mime: False
        self._fallback_logged: set[str] = set()
        self._fallback = ""
        self.forwarded_frames = 0
        self.forwarded_bytes = 0
        self.decoded_frames = 0  # queued for aiortc's decoder (not forwarded)

    def forward_video(self, sink: Callable[[EncodedVideo], None],
                      accepts: Callable[[str], bool], *,
                      fallback: str = "the page did not negotiate it") -> None:
        """Video: hand each complete encoded frame of a codec ``accepts`` to ``sink`` (in
        timestamp order, on the event loop) instead of decoding it; frames of any other
        codec still go to aiortc's decoder (logged once per codec, saying ``fallback``)."""
        self._forward, self._forwards, self._fallback = sink, accepts, fallback

    def attach_playout(self, budget: Callable[[], float | None],
                       want_hold: Callable[[float], None]) -> None:
        """Audio: decide holes against ``budget()`` (seconds a packet may wait past its
        ordinary arrival and still play), and tell ``want_hold`` after each packet what
        retransmissions need while loss persists."""
        if isinstance(self.buffer, AudioJitterBuffer):
            self.buffer.budget = budget
            self._want_hold = want_hold

    def watch_queue(self, watch: Callable[[float], None]) -> None:
        """Video: tell ``watch`` the queue delay (s) the delay-based estimate measures on
        the hop, after each packet that carries abs-send-time."""
        self._queue_watch = watch

    def hold_needed(self) -> float:
        """Seconds of hold a retransmission needs now: 0 unless loss persists."""
        buffer = self.buffer
        if not isinstance(buffer, AudioJitterBuffer) or \
                buffer.recent_holes(LOSS_WINDOW) < LOSS_PERSISTS:
            return 0.0
        burst = min(BURST_COVER, max(1, buffer.longest_recent_burst(LOSS_WINDOW)))
        return (buffer.nacks.rtt * RTX_RTT_FACTOR + RTX_MARGIN + HOLD_MARGIN
                + burst * buffer.duration / 48_000)

    # --- aiortc's jitter-buffer interface (it calls only ``add``) ------------------------
    def add(self, packet: Any) -> tuple[bool, None]:
        codec = internals.receiver_codec(self.receiver, packet.payload_type)
        if codec is None:
            return False, None
        self.media_ssrc = packet.ssrc
        self.last_packet = self.clock()
        self.packets += 1
        self.payload_bytes += len(packet.payload)
        self._mime = codec.mimeType
        data: bytes = getattr(packet, "_data", b"")
        if isinstance(self.buffer, AudioJitterBuffer):
            for unit in self.buffer.add(packet.sequence_number, packet.timestamp, data):
                self._queue_audio(codec, unit)
            if self._want_hold is not None:
                self._want_hold(self.hold_needed())
        else:
            for frame in self.buffer.add(packet.sequence_number, packet.timestamp, data,
                                         bool(packet.marker)):
                self._queue_video(codec, frame)
        return False, None

    def _queue_video(self, codec: Any, frame: VideoFrameData) -> None:
        mime = codec.mimeType
        if self._forward is not None:
            if self._forwards(mime):
                self.forwarded_frames += 1
                self.forwarded_bytes += len(frame.data)
                self._forward(EncodedVideo(frame.data,
                                           internals.map_timestamp(self.receiver, frame.timestamp),
                                           frame.keyframe, mime))
                return
            if mime not in self._fallback_logged:
                self._fallback_logged.add(mime)
                logger.warning("%s cannot be forwarded as it is (%s): decoding and "
                               "re-encoding it", mime, self._fallback)
        self.decoded_frames += 1
        internals.queue_for_decoding(self.receiver, codec, JitterFrame(frame.data, frame.timestamp))

    def _queue_audio(self, codec: Any, unit: AudioUnit) -> None:
        if self.loss_aware:
            # decoded here, on the event loop: an Opus packet takes ~0.05 ms, far less
            # than a hop to aiortc's decoder thread and back
            decoder = self._decoders.get(codec.payloadType)
            if decoder is None:
                decoder = self._decoders[codec.payloadType] = LossAwareOpusDecoder(
                    self.decoding)
            unit.timestamp = internals.map_timestamp(self.receiver, unit.timestamp)
            for frame in decoder.decode(unit):
                internals.deliver_decoded(self.receiver, frame)
        elif unit.payload is not None:
            internals.queue_for_decoding(self.receiver, codec,
                                         JitterFrame(unit.payload, unit.timestamp))
        else:
            self.unconcealed += 1

    # --- feedback ------------------------------------------------------------------------
    async def after_packet(self, packet: Any) -> None:
        if self.media_ssrc is None:
            return
        lost = self.buffer.take_nacks()
        if lost:
            await internals.send_nack(self.receiver, self.media_ssrc, lost)
        if isinstance(self.buffer, VideoJitterBuffer) and self.buffer.take_keyframe_request():
            await internals.send_pli(self.receiver, self.media_ssrc)

    async def request_keyframe(self) -> bool:
        """Send the sender one PLI now (False before its first packet: nothing to ask)."""
        if self.media_ssrc is None:
            return False
        await internals.send_pli(self.receiver, self.media_ssrc)
        return True

    def estimate_bandwidth(self, abs_send_time: int, arrival: float, size: int) -> int | None:
        """One packet for the delay-based estimate (its arrival off the socket); a REMB due."""
        assert self.delay is not None
        self.delay.rtt = self.rtt
        remb = self.delay.on_packet(arrival, abs_send_time, size)
        if self._queue_watch is not None:
            self._queue_watch(self.delay.queue_delay)
        return remb

    @property
    def rtt(self) -> float:
        """The round trip the jitter buffer measured from retransmissions (seconds)."""
        return self.buffer.nacks.rtt

    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.buffer.stats())
        out.update(packets=self.packets, payload_bytes=self.payload_bytes)
        if self.kind == "video":
            out.update(forwarded_frames=self.forwarded_frames,
                       forwarded_bytes=self.forwarded_bytes, decoded_frames=self.decoded_frames)
            if self.delay is not None:
                out.update(self.delay.stats(),
                           arrival_stamps_dropped=internals.arrival_stamps_dropped(self.receiver))
        if self.kind == "audio":
            d = self.decoding
            out.update(concealed=d.concealed, concealed_ms=round(d.concealed_samples / 48, 1),
                       fec_recovered=d.fec_recovered, decode_errors=d.errors,
                       unconcealed=self.unconcealed, loss_aware=self.loss_aware)
        return out


def install_receive_path(receiver: Any, kind: str) -> ReceivePath:
    """Replace ``receiver``'s jitter buffer and loss handling (call before it starts)."""
    global _warned_no_libopus
    path = ReceivePath(receiver, kind)
    if kind == "audio" and not path.loss_aware and not _warned_no_libopus:
        _warned_no_libopus = True
        logger.warning("libopus not found: lost audio packets play as silence "
                       "(install libopus0 for concealment and in-band FEC)")
    internals.replace_jitter_buffer(receiver, path)
    internals.after_rtp_packet(receiver, path.after_packet)
    if path.delay is not None:
        internals.replace_bandwidth_estimator(receiver, path.estimate_bandwidth)
    _PATHS[receiver] = path
    return path


def receive_path_of(receiver: Any) -> ReceivePath | None:
    """The path :func:`install_receive_path` put on ``receiver`` (None: aiortc's own)."""
    return _PATHS.get(receiver)
