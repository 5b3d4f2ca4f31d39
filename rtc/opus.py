"""Opus settings for music, for every aiortc sender in this process.

aiortc's encoder is hard-wired to 96 kbps with ``application=voip`` (speech tuning) and
ignores SDP fmtp. :func:`configure_opus` installs a subclass that sets full-band
``audio`` at the chosen bitrate (128 kbps stereo by default) and advertises the same in
the SDP (``stereo``/``sprop-stereo``/``maxaveragebitrate``, and ``useinbandfec=1``) so
browsers decode stereo.
It is process-wide, as aiortc's codec table is; call it before creating peers.

In-band FEC follows the loss the receiver sees: :func:`adapt_to_loss` tells the sender's
encoder (libopus's ``packet_loss_perc``) the larger of the RTCP receiver reports'
``fraction lost`` and the share of packets the receiver asked for again (NACK). The
second matters: a retransmission that arrives, even too late to play, counts as received
in the report, so on a hop with a round trip the reports say ~0 while the receiver is
concealing. With no loss libopus stays in CELT, full quality; it carries in-band FEC (a
low-bitrate copy of each frame in the next packet, which the receive path decodes when a
single packet is lost: rtc/opus_decoder.py) only in hybrid mode, which it picks for music
only above an expected loss of ~8 % (measured with libopus 1.6 on a 440 Hz tone at
128 kb/s: no FEC at 1-2 %, 8 % of packets at 3-6 %, all from 8 %). So once any loss has
been seen in the last ``FEC_HOLD`` seconds, libopus is told at least ``FEC_FLOOR``.
PyAV fixes encoder options when it opens the codec, so the encoder here is libopus itself
(:mod:`.libopus`, the same library PyAV encodes with, set up as FFmpeg sets it up:
complexity 10, unconstrained VBR); where it cannot be used it is PyAV's (no FEC), as before.

The rate follows the path under a ceiling (:func:`share_path`, the cloud's senders): the
receiver reports' loss and round trip, and the session's video estimate, go to
:class:`.congestion.audio_share.AudioShare`, and its step reaches libopus in place
(:meth:`MusicOpusEncoder.set_bitrate`, ``OPUS_SET_BITRATE`` between two frames).
"""

from __future__ import annotations

import collections
import logging
import math
import time
from collections.abc import Callable
from fractions import Fraction
from typing import Any

from scope_relay.media.audio import audio_level_dbov

from . import libopus
from .aiortc_internals import (
    NACK_FORMAT,
    OpusEncoderBase,
    install_audio_level,
    install_opus_encoder,
    sender_encoder,
    sender_packet_count,
    sender_rtt,
    tap_rtcp,
)
from .congestion.audio_share import AudioShare, VideoShare

logger = logging.getLogger(__name__)

DEFAULT_BITRATE = 128_000
APPLICATIONS = ("audio", "voip", "lowdelay")
#: the loss libopus is told is the largest recent report, fading by this factor per report
#: (~1 s apart): FEC comes at once with loss and leaves ~20 s after it
LOSS_MEMORY = 0.9
MAX_EXPECTED_LOSS = 30
#: the least expected loss that makes libopus carry FEC for music (see above), and how
#: long after the last loss seen it is kept
FEC_FLOOR = 10
FEC_HOLD = 20.0
#: NACKed packets are counted over this window, against 50 packets a second (20 ms frames)
NACK_WINDOW = 5.0
PACKETS_PER_SECOND = 50
#: NACKed audio packets remembered between two receiver reports, at most
MAX_NACKED = 4096


#: the frames libopus takes as they are: 20 ms of packed s16 stereo at 48 kHz
_OPUS_FRAME = 960
_OPUS_FRAME_BYTES = _OPUS_FRAME * 2 * 2
_OPUS_TIME_BASE = Fraction(1, 48_000)


def _is_opus_ready(frame: Any) -> bool:
    """Whether ``frame`` is one Opus frame as the resampler would hand it on (with a pts:
    without one, the resampler's own timeline gives it)."""
    return (frame.samples == _OPUS_FRAME and frame.sample_rate == 48_000
            and frame.pts is not None and frame.time_base == _OPUS_TIME_BASE
            and frame.format.name == "s16" and frame.layout.name == "stereo")


class MusicOpusEncoder(OpusEncoderBase):
    """aiortc's Opus encoder, tuned by :func:`configure_opus`; libopus itself when it can
    be loaded (the expected loss can then change while encoding)."""

    bitrate = DEFAULT_BITRATE
    application = "audio"

    def __init__(self) -> None:
        super().__init__()  # PyAV's codec and the 20 ms resampler aiortc builds
        self.codec.bit_rate = self.bitrate
        self.codec.options = {"application": self.application}
        self.expected_loss = 0
        #: the bitrate libopus encodes at now (:meth:`set_bitrate`), and how often it moved
        self.current_bitrate = self.bitrate
        self.bitrate_changes = 0
        self._samples = 0  # where the next chunk starts when frames carry no pts
        self._first_pts: int | None = None
        self._opus: Any = None
        self._resampled = False  # a frame has gone through the resampler (encode's fast path)
        if libopus.encoder_available():
            self._opus = libopus.Encoder(48_000, 2, self.application)
            self._opus.configure(bitrate=self.bitrate, complexity=10, vbr=True,
                                 vbr_constraint=False, inband_fec=True, packet_loss_percent=0)

    def set_expected_loss(self, percent: float) -> None:
        """Tell libopus how much loss to expect (0-30 %): FEC is sized by it."""
        value = min(MAX_EXPECTED_LOSS, max(0, math.ceil(percent)))
        if value != self.expected_loss and self._opus is not None:
            self._opus.configure(packet_loss_percent=value)
        self.expected_loss = value

    def set_bitrate(self, bitrate: int) -> bool:
        """Encode at ``bitrate`` b/s from the next frame on (libopus's OPUS_SET_BITRATE,
        in place: no reopen, so no glitch). False where the encoder is PyAV's, whose rate
        is fixed when it opens."""
        if not 6_000 <= bitrate <= 510_000:
            raise ValueError(f"Opus bitrate must be 6000..510000 bit/s, got {bitrate}")
        if self._opus is None:
            return False
        if bitrate != self.current_bitrate:
            self._opus.configure(bitrate=bitrate)
            self.current_bitrate = bitrate
            self.bitrate_changes += 1
        return True

    def encode(self, frame: Any, force_keyframe: bool = False) -> tuple[list[bytes], int | None]:
        if self._opus is None:
            return super().encode(frame, force_keyframe)
        if not self._resampled and _is_opus_ready(frame):
            # already one 20 ms s16 stereo 48 kHz frame and nothing left in the
            # resampler: its bytes go straight to libopus (the resampler would return the
            # same samples after a copy through its filter graph and to_ndarray)
            pts = frame.pts
            if self._first_pts is None:
                self._first_pts = pts
            payload = self._opus.encode(bytes(memoryview(frame.planes[0])[:_OPUS_FRAME_BYTES]),
                                        _OPUS_FRAME)
            self._samples = pts + _OPUS_FRAME
            return [payload], pts - self._first_pts
        self._resampled = True  # it may now hold samples: every later frame goes through it
        payloads, timestamp = [], None
        for chunk in self.resampler.resample(frame):  # 960-sample s16 stereo frames
            # RTP time follows the frames' pts, as aiortc's own encoder does: a stall of
            # the sender's clock moves pts (and so RTP time) forward, not just the samples
            pts = self._samples if chunk.pts is None else chunk.pts
            if self._first_pts is None:
                self._first_pts = pts
            if timestamp is None:
                timestamp = pts - self._first_pts
            payloads.append(self._opus.encode(chunk.to_ndarray().tobytes(), chunk.samples))
            self._samples = pts + chunk.samples
        return payloads, timestamp


class LossEstimate:
    """The loss an audio sender's receiver sees, from its reports and its NACKs."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self.reported = 0.0  # fading maximum of the reports' fraction lost, %
        self._nacked: collections.deque[tuple[float, int]] = collections.deque(maxlen=1024)
        self.last_loss: float | None = None

    def on_report(self, fraction_lost: int) -> None:
        """A receiver report's ``fraction lost`` (0-255)."""
        percent = fraction_lost / 256 * 100
        self.reported = max(percent, self.reported * LOSS_MEMORY)
        if fraction_lost:
            self.last_loss = self.clock()

    def on_nack(self, sequence_numbers: list[int]) -> None:
        now = self.clock()
        known = {seq for _, seq in self._nacked}
        for seq in sequence_numbers:
            if seq not in known:  # a packet asked for again is one loss
                self._nacked.append((now, seq))
        if sequence_numbers:
            self.last_loss = now

    def nack_percent(self) -> float:
        now = self.clock()
        while self._nacked and now - self._nacked[0][0] > NACK_WINDOW:
            self._nacked.popleft()
        return len(self._nacked) / (NACK_WINDOW * PACKETS_PER_SECOND) * 100

    def expected(self) -> float:
        """The loss to tell libopus, %: what is seen, at least ``FEC_FLOOR`` for
        ``FEC_HOLD`` s after any loss."""
        seen = max(self.reported, self.nack_percent())
        if self.last_loss is not None and self.clock() - self.last_loss <= FEC_HOLD:
            return max(seen, FEC_FLOOR)
        return seen


def adapt_to_loss(sender: Any) -> LossEstimate:
    """Feed the loss an audio ``sender``'s receiver sees (reports and NACKs) to its Opus
    encoder."""
    estimate = LossEstimate()

    def on_rtcp(packet: Any) -> None:
        ssrc = getattr(sender, "_ssrc", None)
        if getattr(packet, "fmt", None) == NACK_FORMAT and \
                getattr(packet, "media_ssrc", None) == ssrc:
            estimate.on_nack(list(getattr(packet, "lost", ())))
        else:
            reports = [r for r in getattr(packet, "reports", ()) if r.ssrc == ssrc]
            if not reports:
                return
            estimate.on_report(max(r.fraction_lost for r in reports))
        encoder = sender_encoder(sender)
        if isinstance(encoder, MusicOpusEncoder):
            encoder.set_expected_loss(estimate.expected())

    tap_rtcp(sender, on_rtcp)
    return estimate


class AudioPath:
    """An audio sender's share of the path (:class:`.congestion.audio_share.AudioShare`),
    fed from its receiver reports: the loss before repair is the larger of the report's
    fraction lost and the share of packets NACKed since the report before."""

    def __init__(self, sender: Any, video: Callable[[], VideoShare | None] | None,
                 clock: Callable[[], float] = time.monotonic):
        self.sender, self.video, self.clock = sender, video, clock
        self.share = AudioShare(MusicOpusEncoder.bitrate, with_video=video is not None)
        self.receiver_reports = 0
        self.unapplied = 0  # steps the encoder could not take (PyAV's: no rate change)
        self._nacked: set[int] = set()
        self.nacks_unremembered = 0  # past MAX_NACKED between two reports (counted, not kept)
        self._sent_at_report = 0

    def on_rtcp(self, packet: Any) -> None:
        ssrc = getattr(self.sender, "_ssrc", None)
        if getattr(packet, "fmt", None) == NACK_FORMAT and \
                getattr(packet, "media_ssrc", None) == ssrc:
            for seq in getattr(packet, "lost", ()):
                if len(self._nacked) < MAX_NACKED:  # (bounded: a report clears it)
                    self._nacked.add(seq)
                elif seq not in self._nacked:
                    self.nacks_unremembered += 1
            return
        reports = [r for r in getattr(packet, "reports", ()) if r.ssrc == ssrc]
        if not reports:
            return
        self.receiver_reports += 1
        sent = sender_packet_count(self.sender)
        nacked = len(self._nacked) / (sent - self._sent_at_report) \
            if sent > self._sent_at_report else 0.0
        self._nacked.clear()
        self._sent_at_report = sent
        loss = max(max(r.fraction_lost for r in reports) / 256, min(nacked, 1.0))
        rate = self.share.update(self.clock(), loss, self.video() if self.video else None,
                                 sender_rtt(self.sender))
        encoder = sender_encoder(self.sender)
        if isinstance(encoder, MusicOpusEncoder) and encoder.current_bitrate != rate:
            if not encoder.set_bitrate(rate):
                self.unapplied += 1

    def stats(self) -> dict[str, Any]:
        encoder = sender_encoder(self.sender)
        out: dict[str, Any] = {"receiver_reports": self.receiver_reports,
                               **self.share.stats(), "bitrate_unapplied": self.unapplied,
                               "nacks_unremembered": self.nacks_unremembered}
        if isinstance(encoder, MusicOpusEncoder):
            out["encoder_bitrate"] = encoder.current_bitrate
            out["expected_loss"] = encoder.expected_loss
        return out


def share_path(sender: Any, video: Callable[[], VideoShare | None] | None) -> AudioPath:
    """Let an audio ``sender``'s Opus rate follow the path (rtc.congestion.audio_share);
    ``video``: the session's video estimate, when it sends video (None: audio only)."""
    path = AudioPath(sender, video)
    tap_rtcp(sender, path.on_rtcp)
    return path


def configure_opus(bitrate: int = DEFAULT_BITRATE, application: str = "audio") -> None:
    if not 6_000 <= bitrate <= 510_000:
        raise ValueError(f"Opus bitrate must be 6000..510000 bit/s, got {bitrate}")
    if application not in APPLICATIONS:
        raise ValueError(f"Opus application must be one of {APPLICATIONS}, got {application!r}")
    MusicOpusEncoder.bitrate = bitrate
    MusicOpusEncoder.application = application
    install_opus_encoder(MusicOpusEncoder, {"stereo": 1, "sprop-stereo": 1,
                                            "maxaveragebitrate": bitrate, "useinbandfec": 1})
    install_audio_level(audio_level_dbov)  # the same figure, vectorised
