"""NDI: a session's video and audio published as an NDI source on the local network, for
TouchDesigner, Resolume, OBS (DistroAV), vMix.

Through ndi-python (the optional extra ``ndi``; its wheel ships the NDI runtime, under
NDI's own licence: docs/outputs.md). An :class:`NdiOutput` subscribes to the session's
fan-out like a viewer and sends from one worker thread of its own (the SDK compresses a
frame inside its send call, milliseconds at 720p: never on the event loop). Video goes as
I420, the relay's own format (PyAV's three planes into the one contiguous buffer NDI
wants: the only copy), with the session's frame rate declared; audio as 32-bit float
planar at 48 kHz. Both carry timecodes from the session's media clock (the relay's video
pts at 90 kHz and audio pts at 48 kHz count from one base), so a receiver lines them up
by timecode. What waits to be sent is bounded (:data:`MAX_PENDING`, oldest dropped and
counted).
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction
from types import ModuleType
from typing import Any

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError

from scope_relay.local.sessions.fanout import CountedSubscription, OutputFanout
from scope_relay.protocol.errors import Unavailable
from scope_relay.protocol.media import SAMPLE_RATE, VIDEO_CLOCK_RATE
from scope_relay.util.tasks import OwnedTasks, RunOnce

logger = logging.getLogger(__name__)

#: NDI timecodes count 100 ns
TIMECODE_RATE = 10_000_000
MAX_PENDING = 60
#: the frame rate declared until the stream has shown its own
DEFAULT_FPS = Fraction(30)
#: frames the latency figure is the median of
LATENCY_WINDOW = 100


def load_ndi() -> ModuleType:
    """The NDI binding, initialised; ``UNAVAILABLE`` (503) when it is not installed."""
    try:
        import NDIlib  # type: ignore[import-not-found, unused-ignore]  # (an extra)
    except ImportError:
        raise Unavailable("NDI output needs the 'ndi' extra: pip install 'scope-relay[ndi]'") \
            from None
    if not NDIlib.initialize():
        raise Unavailable("the NDI runtime did not start (this CPU may not be supported)")
    return NDIlib


def declared_rate(intervals: deque[int]) -> Fraction:
    """The frame rate the video's own spacing shows (median interval, 90 kHz), to 1/1000."""
    if len(intervals) < 3:
        return DEFAULT_FPS
    median = statistics.median(intervals)
    return Fraction(round(VIDEO_CLOCK_RATE * 1000 / median), 1000) if median > 0 else DEFAULT_FPS


class NdiSender:
    """The SDK side, touched only from the worker thread."""

    def __init__(self, ndi: ModuleType, name: str):
        self.ndi = ndi
        create = ndi.SendCreate()
        create.ndi_name = name
        create.clock_video = False  # frames go at the relay's release times, not the SDK's
        create.clock_audio = False
        self.instance = ndi.send_create(create)
        if self.instance is None:
            raise Unavailable(f"NDI could not create the source {name!r}")
        self._intervals: deque[int] = deque(maxlen=24)
        self._last_pts: int | None = None

    def send(self, frame: av.VideoFrame | av.AudioFrame) -> None:
        if isinstance(frame, av.VideoFrame):
            self._send_video(frame)
        else:
            self._send_audio(frame)

    def _send_video(self, frame: av.VideoFrame) -> None:
        ndi = self.ndi
        pts = _ticks(frame, VIDEO_CLOCK_RATE)
        if self._last_pts is not None and pts > self._last_pts:
            self._intervals.append(pts - self._last_pts)
        self._last_pts = pts
        if frame.format.name != "yuv420p" or frame.width % 2 or frame.height % 2:
            frame = frame.reformat(width=frame.width // 2 * 2, height=frame.height // 2 * 2,
                                   format="yuv420p")
        out = ndi.VideoFrameV2()
        out.data = frame.to_ndarray()  # (H * 3/2, W): Y, then U, then V, contiguous
        out.FourCC = ndi.FOURCC_VIDEO_TYPE_I420
        out.xres, out.yres = frame.width, frame.height
        out.line_stride_in_bytes = frame.width
        rate = declared_rate(self._intervals)
        out.frame_rate_N, out.frame_rate_D = rate.numerator, rate.denominator
        out.timecode = pts * TIMECODE_RATE // VIDEO_CLOCK_RATE
        ndi.send_send_video_v2(self.instance, out)

    def _send_audio(self, frame: av.AudioFrame) -> None:
        ndi = self.ndi
        pts = _ticks(frame, SAMPLE_RATE)
        if frame.format.name != "s16" or frame.sample_rate != SAMPLE_RATE:
            frame = av.AudioResampler(format="s16", layout="stereo", rate=SAMPLE_RATE).resample(frame)[0]
        channels = len(frame.layout.channels)
        pcm = frame.to_ndarray().reshape(-1, channels).T.astype(np.float32) / 32768.0
        out = ndi.AudioFrameV3()
        out.sample_rate = SAMPLE_RATE
        out.no_channels, out.no_samples = pcm.shape
        out.data = np.ascontiguousarray(pcm)
        out.channel_stride_in_bytes = pcm.shape[1] * 4
        out.timecode = pts * TIMECODE_RATE // SAMPLE_RATE
        ndi.send_send_audio_v3(self.instance, out)

    def connections(self) -> int:
        return int(self.ndi.send_get_no_connections(self.instance, 0))

    def close(self) -> None:
        self.ndi.send_destroy(self.instance)


def _ticks(frame: av.VideoFrame | av.AudioFrame, rate: int) -> int:
    pts = frame.pts or 0
    return round(pts * frame.time_base * rate) if frame.time_base else pts


class NdiOutput:
    """One session published as one NDI source."""

    kind = "ndi"

    def __init__(self, fanout: OutputFanout, name: str, *, video: bool, audio: bool,
                 ndi: ModuleType | None = None):
        self.name = name
        self.fanout = fanout
        self._ndi = ndi  # loaded by start(), off the loop (importing it loads libndi)
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="ndi-send")
        self._sender: NdiSender | None = None
        # decoded: the session's lazy decoder runs while this output is attached
        self.video, self.audio = fanout.subscribe(video=video, audio=audio, decoded=True,
                                                  name="ndi")
        self._pending: asyncio.Queue[tuple[float, av.VideoFrame | av.AudioFrame]] = \
            asyncio.Queue(MAX_PENDING)
        self._tasks = OwnedTasks()
        self._close = RunOnce(self._close_once)
        self.frames_sent = {"video": 0, "audio": 0}
        self.frames_dropped = 0
        #: from a frame's release by the fan-out to its send (ms), recent frames: median
        self._latencies: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self.clients = 0
        self.failed: str | None = None

    async def start(self) -> None:
        """Create the source (in the worker thread) and start sending."""
        loop = asyncio.get_running_loop()
        try:
            if self._ndi is None:
                self._ndi = await loop.run_in_executor(self._executor, load_ndi)
            self._sender = await loop.run_in_executor(self._executor, NdiSender, self._ndi,
                                                      self.name)
        except BaseException:
            await self.close()
            raise
        for sub in (self.video, self.audio):
            if sub is not None:
                self._tasks.spawn(self._read(sub))
        self._tasks.spawn(self._send())

    async def _read(self, sub: CountedSubscription) -> None:
        try:
            while True:
                frame = await sub.recv()
                if self._pending.full():
                    self._pending.get_nowait()
                    self.frames_dropped += 1
                self._pending.put_nowait((time.monotonic(), frame))
        except MediaStreamError:
            pass

    async def _send(self) -> None:
        loop = asyncio.get_running_loop()
        sender = self._sender
        assert sender is not None
        sent = 0
        while True:
            released, frame = await self._pending.get()
            try:
                await loop.run_in_executor(self._executor, sender.send, frame)
            except Exception as exc:  # this output stops; the session never notices
                logger.exception("NDI output %r failed", self.name)
                self.failed = f"{type(exc).__name__}: {exc}"
                return
            kind = "video" if isinstance(frame, av.VideoFrame) else "audio"
            self.frames_sent[kind] += 1
            self._latencies.append((time.monotonic() - released) * 1000)
            sent += 1
            if sent % 50 == 1:  # (a cheap call, but not every frame)
                self.clients = await loop.run_in_executor(self._executor, sender.connections)

    def latency_ms(self) -> float:
        """Median over the recent frames (0 before the first)."""
        return round(statistics.median(self._latencies), 1) if self._latencies else 0.0

    def stats(self) -> dict[str, Any]:
        return {"clients": self.clients, "frames_sent": sum(self.frames_sent.values()),
                "video_frames_sent": self.frames_sent["video"],
                "audio_frames_sent": self.frames_sent["audio"],
                "frames_dropped": self.frames_dropped, "latency_ms": self.latency_ms()}

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "failed": self.failed, **self.stats()}

    async def close(self) -> None:
        await self._close()

    async def _close_once(self) -> None:
        await self._tasks.cancel_all()
        self.fanout.unsubscribe(self.video, self.audio)
        sender, self._sender = self._sender, None
        if sender is not None:
            await asyncio.get_running_loop().run_in_executor(self._executor, sender.close)
        self._executor.shutdown(wait=False)
