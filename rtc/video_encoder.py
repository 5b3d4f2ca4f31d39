"""The video encoders every video sender uses: a rate that fits the picture.

aiortc's ``Vp8Encoder`` starts at 500 kb/s and never goes above 1.5 Mb/s whatever the
resolution (``MAX_BITRATE`` in ``aiortc/codecs/vpx.py``; its ``H264Encoder``: 3 Mb/s), and
restarts its codec (a keyframe) whenever a receiver's estimate moves its target by 10 %.
:class:`RatedVideoEncoder` is the rate policy, whatever the codec; :class:`RatedVp8Encoder`
keeps aiortc's VP8 packetisation and realtime libvpx settings under it
(:class:`.h264_encoder.RatedH264Encoder`: libx264 and aiortc's H.264 packetisation). The
policy:

- its ceiling is ``--video-bitrate`` or, by default, :func:`default_video_bitrate` of the
  picture's size and frame rate (the rate is read from the frames' timestamps);
- it aims at the bandwidth estimate (rtc.congestion.estimate: the receiver's delay-based
  REMB, which our receive path computes, and the receiver reports' loss), which lets an
  encoder sending under its target grow past the receiver's 1.5x-what-arrives cap, and
  climbs back towards the ceiling as the estimate allows. A fall is applied at most every
  :attr:`RatedVideoEncoder.fall_interval` s, a rise every
  :attr:`RatedVideoEncoder.raise_interval` s, and only moves of more than 20 % reopen the
  codec (libvpx and libx264 through PyAV cannot change their rate in place, and a reopened
  codec starts with a keyframe);
- a keyframe at least every :attr:`RatedVideoEncoder.keyframe_seconds` (aiortc: 3000 frames).

A codec plugs in through four hooks: :meth:`RatedVideoEncoder._configure` (a fresh
codec's settings), :meth:`~RatedVideoEncoder._encode_bytes`,
:meth:`~RatedVideoEncoder._is_keyframe` and :meth:`~RatedVideoEncoder._packetise`.
:func:`configure_video` installs both codecs process-wide, as :func:`.opus.configure_opus`
does for audio.
"""

from __future__ import annotations

import collections
import fractions
import multiprocessing
import time
from typing import Any, ClassVar, cast

import av
from av.frame import Frame
from av.video.codeccontext import VideoCodecContext

from .aiortc_internals import Vp8EncoderBase, install_h264_encoder, install_video_encoder, vp8_threads
from .congestion.estimate import BandwidthEstimate
from .congestion.ladder import FrameSkipper, Ladder
from .congestion.pacer import PACING_FACTOR, Pacer

VIDEO_CLOCK = 90_000
#: bits per pixel per frame at 30 fps: 2.8 Mb/s for 1280x720, 6.2 Mb/s for 1920x1080
BITS_PER_PIXEL = 0.1
MIN_BITRATE = 300_000
MAX_DEFAULT_BITRATE = 16_000_000
#: the estimate is not followed below this (a ceiling under the stream's rate: the ladder
#: makes the picture small and slow enough for it first)
FLOOR_BITRATE = 50_000
#: the pacer's backlog (s) past which frames are skipped (encoder pushback), at least
PUSHBACK_BACKLOG = 0.1
#: the largest keyframe, in % of an average frame's bits (libvpx's rc_max_intra_bitrate_pct):
#: a keyframe is what a bottleneck's queue overflows with, then the receiver asks for another
MAX_INTRA_PCT = 400
#: what the cloud's encoders start at, as a share of their ceiling, growing as receiver
#: reports show no loss (GCC starts low too): a ceiling below the stream's rate is not
#: first met with seconds of the full rate, which its queue drops, audio with it
START_SHARE = 0.25
#: seconds without loss or a delay overuse on the path before a requested keyframe may leave
#: ahead of the pacer's schedule (a burst into a full bottleneck is dropped there, and its
#: loss asks for another keyframe)
BURST_CALM_S = 5.0
#: forced keyframes whose timestamps the stats keep
KEYFRAME_TIMELINE = 32


def default_video_bitrate(width: int, height: int, fps: float) -> int:
    """A ceiling that fits the picture: :data:`BITS_PER_PIXEL` at 30 fps, scaled by
    ``(fps / 30) ** 0.7`` (a slower picture changes less per frame, so each frame costs
    more bits, not proportionally fewer), within [300 kb/s, 16 Mb/s]."""
    fps = min(max(fps, 1.0), 120.0)
    rate = BITS_PER_PIXEL * width * height * 30 * (fps / 30) ** 0.7
    return int(min(max(rate, MIN_BITRATE), MAX_DEFAULT_BITRATE))


class RatedVideoEncoder:
    """The rate policy of every video sender, whatever the codec (module docstring).
    Mixed in before an aiortc encoder class (its packetiser), with the codec hooks."""

    #: the libavcodec encoder a new codec is created with
    codec_name: ClassVar[str] = ""

    #: the ceiling every new encoder gets; ``None``: :func:`default_video_bitrate`
    ceiling: ClassVar[int | None] = None
    keyframe_seconds: ClassVar[float] = 3.0
    #: the share of the ceiling a new encoder starts at (:data:`START_SHARE` on the cloud)
    start_share: ClassVar[float] = 1.0
    raise_interval: ClassVar[float] = 2.0
    fall_interval: ClassVar[float] = 1.0

    def __init__(self) -> None:
        super().__init__()
        self._estimate: int | None = None  # the receiver's, as last told
        self._target: int | None = None  # what we aim at (None: the ceiling)
        self._sent: collections.deque[tuple[float, int]] = collections.deque()  # (s, bytes)
        self._fps: float | None = None  # what the codec was opened for
        self._intervals: list[float] = []
        self._last_pts: float | None = None
        self._opened_at = 0.0
        self._rate = 0  # what the codec was opened with
        self.codec: VideoCodecContext | None = None
        self.reopens = 0
        self.keyframes = 0
        self.payload_bytes = 0
        # congestion control (rtc/congestion): the estimate, the ladder, the pacer's backlog
        self.bandwidth = BandwidthEstimate(FLOOR_BITRATE, default_video_bitrate(1280, 720, 30.0))
        self.ladder = Ladder(default_video_bitrate)
        self._skipper = FrameSkipper()
        self._source: tuple[int, int] | None = None  # the frames' own size
        #: the pacer this encoder's packets go through (set by rtc.congestion.pace_video)
        self.pacer: Pacer | None = None
        self.frames_skipped = 0  # by the ladder's frame rate
        self.frames_pushed_back = 0  # the pacer's queue was long
        #: a keyframe was asked for while frames were being skipped: the next one kept is
        self._keyframe_owed = False
        #: when the receiver's latest PLI/FIR came (:meth:`on_keyframe_request`), until a
        #: forced keyframe answers it
        self._keyframe_asked: float | None = None
        self._congested_at: float | None = None  # the last loss or delay overuse seen
        self.keyframes_paced = 0  # requested, but sent paced: the path was not calm
        #: the latest forced keyframes: (asked, encode started, encoded, bytes, packets),
        #: on the system's monotonic clock (benchmarks/keyframe_latency.py's stages)
        self.keyframe_timeline: collections.deque[tuple[float | None, float, float, int, int]] = \
            collections.deque(maxlen=KEYFRAME_TIMELINE)

    # --- the rate ------------------------------------------------------------------------
    @property
    def target_bitrate(self) -> int:
        """Bits a second we aim at: the ceiling, unless the estimate says the path
        carries less."""
        ceiling = self.current_ceiling()
        return ceiling if self._target is None else min(self._target, ceiling)

    @target_bitrate.setter
    def target_bitrate(self, bitrate: int) -> None:  # aiortc's sender: on each REMB
        self._estimate = int(bitrate)
        overuses, now = self.bandwidth.overuses, time.monotonic()
        self.bandwidth.on_delay_estimate(int(bitrate), self.send_rate(), now)
        if self.bandwidth.overuses > overuses:
            self._congested_at = now

    def on_receiver_report(self, fraction_lost: float, rtt: float | None) -> None:
        """A receiver report for our stream (rtc.send_feedback): the loss-based half."""
        now = time.monotonic()
        if fraction_lost > 0:
            self._congested_at = now
        self.bandwidth.on_loss_report(fraction_lost, now, self.send_rate(), rtt)

    def on_keyframe_request(self) -> None:
        """The receiver asked for a keyframe (rtc.send_feedback; aiortc's sender forces the
        next frame): noted, so the keyframe's timeline starts at the request."""
        if self._keyframe_asked is None:
            self._keyframe_asked = time.monotonic()

    def pacing_rate(self) -> float:
        """What the pacer sends at: :data:`PACING_FACTOR` x the target."""
        return PACING_FACTOR * self.target_bitrate

    def send_rate(self) -> float | None:
        """Bits a second encoded over the last second of wall time (None: too little). Not
        media time: a sender that falls behind sends fewer frames a second than their
        timestamps say, and the receiver's estimate follows what really arrives."""
        if len(self._sent) < 3:
            return None
        span = self._sent[-1][0] - self._sent[0][0]
        return sum(n for _, n in list(self._sent)[1:]) * 8 / span if span > 0 else None

    def _follow_estimate(self) -> None:
        """Aim at the bandwidth estimate (rtc.congestion.estimate: REMB's delay-based
        limit and the receiver reports' loss-based one), once there is feedback."""
        self.bandwidth.ceiling = self.current_ceiling()
        if self.codec is None and self.bandwidth.loss_based is None and self.start_share < 1:
            self.bandwidth.loss_based = self.start_share * self.bandwidth.ceiling  # (first frame)
        self._target = self.bandwidth.value

    def _adapt(self, frame: av.VideoFrame, fps: float,
               keyframe_wanted: bool = False) -> av.VideoFrame | None:
        """The frame as the ladder's step wants it: ``None`` to skip it (a lower frame
        rate, or the pacer's backlog is long), or at a smaller size. A keyframe a receiver
        waits for is not held for the lower frame rate's next slot: it is taken now and
        the slots count from it (the pacer's backlog still skips it)."""
        width, height = frame.width, frame.height
        self._source = (width, height)
        now = time.monotonic()
        self.bandwidth.on_silence(now)  # (no receiver reports: the next frame's target)
        step = self.ladder.update(self.target_bitrate, width, height, fps, now)
        out_w, out_h, out_fps = self.ladder.picture(step, width, height, fps)
        media_time = float(frame.pts * frame.time_base) if (
            frame.pts is not None and frame.time_base is not None) else time.monotonic()
        if not self._skipper.keep(media_time, out_fps if out_fps < fps * 0.9 else None,
                                  now=keyframe_wanted):
            self.frames_skipped += 1
            return None
        pacer = self.pacer
        if pacer is not None and pacer.backlog() > max(PUSHBACK_BACKLOG, 2.0 / out_fps):
            self.frames_pushed_back += 1
            return None
        if (out_w, out_h) != (width, height):
            frame = frame.reformat(width=out_w, height=out_h)
        return frame

    def current_ceiling(self) -> int:
        if self.ceiling is not None:
            return self.ceiling
        if self._source is None or self._fps is None:
            return default_video_bitrate(1280, 720, 30.0)
        return default_video_bitrate(*self._source, self._fps)  # (full size, whatever the step)

    def _frame_rate(self, frame: Frame) -> float:
        """Frames a second, the median of the recent timestamp steps (30 until known)."""
        if frame.pts is None or frame.time_base is None:
            return self._fps or 30.0
        now = float(frame.pts * frame.time_base)
        if self._last_pts is not None and now > self._last_pts:
            self._intervals.append(now - self._last_pts)
            del self._intervals[:-15]
        self._last_pts = now
        if len(self._intervals) < 5:
            return self._fps or 30.0
        step = sorted(self._intervals)[len(self._intervals) // 2]
        return min(max(1.0 / step, 1.0), 120.0)

    def _needs_reopen(self, frame: Any, fps: float) -> bool:
        codec = self.codec
        if codec is None or frame.width != codec.width or frame.height != codec.height:
            return True
        if self._fps is not None and abs(fps - self._fps) / self._fps > 0.25:
            self._fps = fps
            return True
        wanted = self.target_bitrate
        if abs(wanted - self._rate) / self._rate <= 0.2:
            return False
        wait = self.fall_interval if wanted < self._rate else self.raise_interval
        return time.monotonic() - self._opened_at >= wait

    def _open(self, frame: Any, fps: float) -> None:
        self._fps = fps if self._fps is None else self._fps
        codec = cast(VideoCodecContext, av.CodecContext.create(self.codec_name, "w"))
        codec.width, codec.height = frame.width, frame.height
        self.codec = codec  # (current_ceiling reads the size from it)
        rate = self._rate = self.target_bitrate
        codec.bit_rate = rate
        codec.pix_fmt = "yuv420p"
        codec.time_base = fractions.Fraction(1, VIDEO_CLOCK)
        codec.gop_size = max(1, round(self.keyframe_seconds * self._fps))  # keyframe interval
        self._configure(codec, rate, self._fps)
        codec.thread_count = vp8_threads(frame.width * frame.height, multiprocessing.cpu_count())
        self._opened_at = time.monotonic()
        self.reopens += 1

    # --- the codec's hooks ---------------------------------------------------------------
    def _configure(self, codec: VideoCodecContext, rate: int, fps: float) -> None:
        """A fresh codec's own settings (size, ``bit_rate``, ``gop_size`` are set)."""
        raise NotImplementedError

    def _encode_bytes(self, frame: av.VideoFrame) -> bytes:
        """One frame's bitstream (empty when the codec holds it back)."""
        assert self.codec is not None
        return b"".join(bytes(packet) for packet in self.codec.encode(frame))

    def _is_keyframe(self, data: bytes) -> bool:
        raise NotImplementedError

    def _packetise(self, data: bytes) -> list[bytes]:
        """RTP payloads for one frame's bitstream."""
        raise NotImplementedError

    # --- aiortc's Encoder interface ------------------------------------------------------
    def encode(self, frame: Frame, force_keyframe: bool = False) -> tuple[list[bytes], int]:
        assert isinstance(frame, av.VideoFrame)
        if frame.format.name != "yuv420p":
            frame = frame.reformat(format="yuv420p")
        fps = self._frame_rate(frame)
        self._follow_estimate()
        adapted = self._adapt(frame, fps, force_keyframe or self._keyframe_owed)
        if adapted is None:  # (aiortc has cleared its request: owed to the next frame kept)
            self._keyframe_owed = self._keyframe_owed or force_keyframe
            return [], 0
        frame = adapted
        force_keyframe, self._keyframe_owed = force_keyframe or self._keyframe_owed, False
        if self._needs_reopen(frame, fps):
            self._open(frame, fps)
        if force_keyframe:
            frame.pict_type = av.video.frame.PictureType.I
        timestamp = round(float(frame.pts * frame.time_base) * VIDEO_CLOCK) if (
            frame.pts is not None and frame.time_base is not None) else 0
        frame.pts, frame.time_base = timestamp, fractions.Fraction(1, VIDEO_CLOCK)
        started = time.monotonic() if force_keyframe else 0.0  # (a forced one's timeline)
        data = self._encode_bytes(frame)
        keyframe = bool(data) and self._is_keyframe(data)
        if keyframe:
            self.keyframes += 1
        self.payload_bytes += len(data)
        now = time.monotonic()  # wall time: what a receiver's estimate is measured in
        self._sent.append((now, len(data)))
        while self._sent and self._sent[0][0] < now - 1.0:
            self._sent.popleft()
        payloads = self._packetise(data)
        if keyframe and force_keyframe:  # asked for: the receiver waits for it
            calm = self._congested_at is None or now - self._congested_at >= BURST_CALM_S
            if self.pacer is not None:  # (its packets are enqueued as soon as we return)
                self.pacer.expect_requested_keyframe(len(payloads), burst=calm)
                self.keyframes_paced += not calm
            self.keyframe_timeline.append(
                (self._keyframe_asked, started, now, len(data), len(payloads)))
            self._keyframe_asked = None
        return payloads, timestamp

    def stats(self) -> dict[str, Any]:
        sent = self.send_rate()
        source = self._source or (0, 0)
        width, height, fps = self.ladder.picture(self.ladder.step, *source, self._fps or 0.0)
        out: dict[str, Any] = {
            "target_bitrate": self.target_bitrate,
            "send_bitrate": None if sent is None else round(sent),
            "ceiling_bitrate": self.current_ceiling(),
            "receiver_estimate": self._estimate, "encoder_opens": self.reopens,
            "keyframes": self.keyframes, "encoded_bytes": self.payload_bytes,
            "ladder_step": self.ladder.step, "ladder_moves": self.ladder.moves,
            "send_fps": round(fps, 1), "send_width": width, "send_height": height,
            "frames_skipped": self.frames_skipped,
            "frames_pushed_back": self.frames_pushed_back, **self.bandwidth.stats()}
        out["requested_keyframes_paced"] = self.keyframes_paced
        out["forced_keyframes_monotonic"] = [
            [None if t is None else round(t, 6) for t in row[:3]] + list(row[3:])
            for row in self.keyframe_timeline]
        if self.pacer is not None:
            out.update(self.pacer.stats())
        return out


class RatedVp8Encoder(RatedVideoEncoder, Vp8EncoderBase):
    """aiortc's VP8 encoder (its packetiser) with the rate policy and realtime libvpx."""

    codec_name = "libvpx"

    def __init__(self) -> None:
        super().__init__()
        self.picture_id: int = self.picture_id  # (aiortc's, random; typed here)

    def _configure(self, codec: VideoCodecContext, rate: int, fps: float) -> None:
        codec.qmin, codec.qmax = 2, 56
        codec.options = {
            "bufsize": str(rate),  # rc_buf_sz = bufsize * 1000 / bit_rate: 1 s
            "cpu-used": "-6", "deadline": "realtime", "lag-in-frames": "0",
            "minrate": str(rate), "maxrate": str(rate),  # CBR
            "max-intra-rate": str(MAX_INTRA_PCT),
            "noise-sensitivity": "4", "overshoot-pct": "15", "partitions": "0",
            "static-thresh": "1", "undershoot-pct": "100",
        }

    def _is_keyframe(self, data: bytes) -> bool:
        return not data[0] & 1  # VP8 frame tag: bit 0 clear on a keyframe

    def _packetise(self, data: bytes) -> list[bytes]:
        payloads: list[bytes] = self._packetize(data, self.picture_id)
        self.picture_id = (self.picture_id + 1) % (1 << 15)
        return payloads


def configure_video(bitrate: int | None = None, start_share: float = 1.0) -> None:
    """Make every new VP8 and H.264 sender in this process use :class:`RatedVp8Encoder` /
    :class:`.h264_encoder.RatedH264Encoder` with ``bitrate`` as its ceiling (``None``:
    :func:`default_video_bitrate`), starting at ``start_share`` of it."""
    from .h264_encoder import RatedH264Encoder  # (it builds on this module)

    if bitrate is not None and bitrate < MIN_BITRATE:
        raise ValueError(f"a video bitrate below {MIN_BITRATE} b/s cannot carry a picture, "
                         f"got {bitrate}")
    if not 0 < start_share <= 1:
        raise ValueError(f"start_share must be in (0, 1], got {start_share}")
    RatedVideoEncoder.ceiling = bitrate
    RatedVideoEncoder.start_share = start_share
    install_video_encoder(RatedVp8Encoder)
    install_h264_encoder(RatedH264Encoder)
