"""The MPEG-TS encoder and muxer of one stream: H.264 + AAC through PyAV, low latency.

Pure and synchronous: :class:`TsMuxer` is fed the relay's frames in release order and
returns the bytes the muxer wrote, cut on 188-byte packet boundaries so a client may join
between any two chunks. It runs in one worker thread (``ts.py``); nothing here touches
the event loop.

Low latency: x264 ``ultrafast`` / ``zerolatency`` (no B-frames, no lookahead, one frame
in, one frame out), a keyframe forced every :data:`KEYFRAME_INTERVAL` s so a client that
joins plays within about that, the muxer flushing every packet and interleaving with at
most :data:`MAX_INTERLEAVE` s of wait. Timestamps are the relay's own: video pts at
90 kHz and audio pts at 48 kHz count from one base (``protocol/media.py``), so a picture
and a sound released together carry the same time in the stream.
"""

from __future__ import annotations

import io
from fractions import Fraction

import av
import numpy as np
from av.video.frame import PictureType

from scope_relay.media.encoding import add_aac_stream, add_h264_stream
from scope_relay.protocol.media import SAMPLE_RATE, VIDEO_CLOCK_RATE

TS_PACKET = 188
#: PAT, SDT and PMT (FFmpeg's default PMT PID): what a client joining mid-stream needs first
PSI_PIDS = frozenset({0x0000, 0x0011, 0x1000})
#: FFmpeg's first elementary stream's PID: the video, which is added first
VIDEO_PID = 0x0100
KEYFRAME_INTERVAL = 1.0
MAX_INTERLEAVE = 0.3
AAC_FRAME = 1024
AUDIO_BITRATE = 128_000
#: x264 for a live stream: the fastest preset, no frame delay
LIVE_OPTIONS = {"preset": "ultrafast", "tune": "zerolatency"}
#: an audio gap longer than this is a new timeline, not silence to fill
MAX_AUDIO_GAP = SAMPLE_RATE
VIDEO_TIME_BASE = Fraction(1, VIDEO_CLOCK_RATE)
AUDIO_TIME_BASE = Fraction(1, SAMPLE_RATE)


class _Sink(io.RawIOBase):
    """Where the muxer writes: kept until :meth:`take`."""

    def __init__(self) -> None:
        super().__init__()
        self.data = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, b: bytes) -> int:  # type: ignore[override]
        self.data += b
        return len(b)


def psi_packets(data: bytes) -> dict[int, bytes]:
    """The PAT/SDT/PMT packets in ``data`` (whole TS packets), by PID."""
    found: dict[int, bytes] = {}
    for at in range(0, len(data) - TS_PACKET + 1, TS_PACKET):
        packet = data[at:at + TS_PACKET]
        pid = ((packet[1] & 0x1F) << 8) | packet[2]
        if packet[0] == 0x47 and pid in PSI_PIDS:
            found.setdefault(pid, bytes(packet))
    return found


def keyframe_at(data: bytes, pid: int = VIDEO_PID) -> int | None:
    """Where in ``data`` (whole TS packets) the first video keyframe's packets begin: the
    packet of ``pid`` that starts a PES and has the random-access flag FFmpeg sets on
    keyframes; ``None`` if none does."""
    for at in range(0, len(data) - TS_PACKET + 1, TS_PACKET):
        b = data[at:at + 6]
        if (b[0] == 0x47 and b[1] & 0x40 and ((b[1] & 0x1F) << 8 | b[2]) == pid
                and (b[3] >> 4) & 2 and b[4] > 0 and b[5] & 0x40):
            return at
    return None


class TsMuxer:
    """Frames in, MPEG-TS bytes out. Starts at the first video frame when the stream has
    video (audio before it is not sent), at the first audio frame otherwise."""

    def __init__(self, *, video: bool, audio: bool):
        if not (video or audio):
            raise ValueError("an MPEG-TS stream needs video or audio")
        self.has_video, self.has_audio = video, audio
        self._sink = _Sink()
        self._container: av.container.OutputContainer | None = None
        self._video: av.VideoStream | None = None
        self._audio: av.AudioStream | None = None
        self._size: tuple[int, int] | None = None
        self._last_key: int | None = None
        self._pending = b""  # written, not yet a whole TS packet
        #: the stream's PSI (PAT, SDT, PMT), given first to every client that joins later
        self.header = b""
        self._psi: dict[int, bytes] = {}
        # audio on a sample timeline: planar float, the pts of its first sample
        self._audio_buffer = np.zeros((2, 0), np.float32)
        self._audio_start: int | None = None
        self.audio_gap_ms = 0.0  # silence inserted for missing audio
        self.video_frames = 0
        self.audio_frames = 0

    # --- setup -----------------------------------------------------------------------------
    def _open(self, size: tuple[int, int] | None) -> av.container.OutputContainer:
        container = av.open(self._sink, mode="w", format="mpegts", options={
            "flush_packets": "1", "max_interleave_delta": str(int(MAX_INTERLEAVE * 1e6)),
            "max_delay": "0"})
        if self.has_video:
            assert size is not None
            # keyframes are forced by time (below), never by count
            self._video = add_h264_stream(container, size, LIVE_OPTIONS, gop_size=10_000)
        if self.has_audio:
            self._audio = add_aac_stream(container, AUDIO_BITRATE)
        self._size = size
        return container

    @property
    def started(self) -> bool:
        return self._container is not None

    # --- frames in ---------------------------------------------------------------------------
    def add(self, frame: av.VideoFrame | av.AudioFrame) -> bytes:
        """Encode and mux one frame; the whole TS packets written since the last call."""
        if isinstance(frame, av.VideoFrame):
            self._add_video(frame)
        else:
            self._add_audio(frame)
        return self._take()

    def _add_video(self, frame: av.VideoFrame) -> None:
        if not self.has_video or frame.pts is None:
            return
        if self._container is None:
            self._container = self._open((frame.width, frame.height))
        assert self._video is not None and self._size is not None
        pts = round(frame.pts * frame.time_base * VIDEO_CLOCK_RATE) if frame.time_base else frame.pts
        # our own frame to stamp: the fan-out hands this one to every other peer too
        if (frame.width, frame.height) != self._size or frame.format.name != "yuv420p":
            out = frame.reformat(width=self._size[0], height=self._size[1], format="yuv420p")
        else:
            out = av.VideoFrame.from_ndarray(frame.to_ndarray(), format="yuv420p")
        out.pts, out.time_base = pts, VIDEO_TIME_BASE
        if self._last_key is None or pts - self._last_key >= KEYFRAME_INTERVAL * VIDEO_CLOCK_RATE:
            out.pict_type = PictureType.I
            self._last_key = pts
        else:
            out.pict_type = PictureType.NONE
        self._mux(self._video.encode(out))
        self.video_frames += 1

    def _add_audio(self, frame: av.AudioFrame) -> None:
        if not self.has_audio or frame.pts is None:
            return
        if self._container is None:
            if self.has_video:
                return  # the stream starts with a picture
            self._container = self._open(None)
        samples = _planar_stereo(frame)
        pts = round(frame.pts * frame.time_base * SAMPLE_RATE) if frame.time_base else frame.pts
        if self._audio_start is None:
            self._audio_start = pts
        expected = self._audio_start + self._audio_buffer.shape[1]
        gap = pts - expected
        if gap > MAX_AUDIO_GAP or gap < -samples.shape[1]:  # a new timeline: start again there
            self._audio_buffer = np.zeros((2, 0), np.float32)
            self._audio_start = pts
        elif gap > 0:  # missing audio: silence, so the stream keeps its clock
            self._audio_buffer = np.concatenate(
                [self._audio_buffer, np.zeros((2, gap), np.float32)], axis=1)
            self.audio_gap_ms += gap * 1000 / SAMPLE_RATE
        elif gap < 0:  # overlaps what is already queued: keep the queued samples
            samples = samples[:, -gap:]
        self._audio_buffer = np.concatenate([self._audio_buffer, samples], axis=1)
        assert self._audio is not None
        while self._audio_buffer.shape[1] >= AAC_FRAME:
            block = np.ascontiguousarray(self._audio_buffer[:, :AAC_FRAME])
            self._audio_buffer = self._audio_buffer[:, AAC_FRAME:]
            out = av.AudioFrame.from_ndarray(block, format="fltp", layout="stereo")
            out.sample_rate = SAMPLE_RATE
            out.pts, out.time_base = self._audio_start, AUDIO_TIME_BASE
            self._audio_start += AAC_FRAME
            self._mux(self._audio.encode(out))
            self.audio_frames += 1

    def _mux(self, packets: list[av.Packet]) -> None:
        assert self._container is not None
        for packet in packets:
            self._container.mux(packet)

    def _take(self) -> bytes:
        data = self._pending + bytes(self._sink.data)
        self._sink.data.clear()
        whole = len(data) - len(data) % TS_PACKET
        self._pending = data[whole:]
        out = data[:whole]
        if len(self._psi) < len(PSI_PIDS) and out:
            for pid, packet in psi_packets(out).items():
                self._psi.setdefault(pid, packet)
            self.header = b"".join(self._psi[pid] for pid in sorted(self._psi))
        return out

    def close(self) -> None:
        """Flush nothing more (a live stream's tail is not worth a wait) and free the codecs."""
        if self._container is not None:
            try:
                self._container.close()
            finally:
                self._container = None


def _planar_stereo(frame: av.AudioFrame) -> np.ndarray:
    """``(2, samples)`` float32 in [-1, 1] from the relay's packed s16 (any other format
    through a resampler)."""
    if frame.format.name != "s16" or frame.sample_rate != SAMPLE_RATE:
        frame = av.AudioResampler(format="s16", layout="stereo", rate=SAMPLE_RATE).resample(frame)[0]
    data = frame.to_ndarray().reshape(-1)
    channels = len(frame.layout.channels)
    pcm = data.reshape(-1, channels).T.astype(np.float32) / 32768.0
    if channels == 1:
        pcm = np.repeat(pcm, 2, axis=0)
    return pcm[:2]
