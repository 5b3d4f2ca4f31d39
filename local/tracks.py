"""The relay's output tracks: to the browser, released on the local clock by the
FrameProcessor's one shared offset, and the browser's camera, bounded, up to the cloud."""

from __future__ import annotations

import asyncio
import collections

import av
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

from scope_relay.protocol.audio import FRAME_SAMPLES, SAMPLE_RATE, s16_frame
from scope_relay.protocol.clock import (OPUS_LOOKAHEAD_SECONDS, VIDEO_TIME_BASE, sleep_until,
                                        video_pts)

from .frame_processor import FrameProcessor


class CloudTrack(MediaStreamTrack):
    """Video from the cloud to the browser."""

    kind = "video"

    def __init__(self, processor: FrameProcessor):
        super().__init__()
        self.processor = processor
        self.frames_sent = 0
        self._last_pts = -1

    async def recv(self) -> av.VideoFrame:
        p = self.processor
        try:
            cloud_time, frame = await p.next_video()
        except EOFError:
            self.stop()
            raise MediaStreamError from None
        await sleep_until(p.clock, p.release_time(cloud_time))
        assert p.base_time is not None  # set by the first frame queued
        pts = max(video_pts(cloud_time - p.base_time), self._last_pts + 1)
        self._last_pts = pts
        frame.pts = pts
        frame.time_base = VIDEO_TIME_BASE
        self.frames_sent += 1
        return frame


class AudioProcessingTrack(MediaStreamTrack):
    """48 kHz stereo 20 ms packed-s16 frames to the browser; bit-exact for 48 kHz s16 input."""

    kind = "audio"

    def __init__(self, processor: FrameProcessor):
        super().__init__()
        self.processor = processor
        self.frames_sent = 0

    async def recv(self) -> av.AudioFrame:
        p = self.processor
        try:
            cursor = await p.first_audio()
        except EOFError:
            self.stop()
            raise MediaStreamError from None
        await sleep_until(p.clock, p.release_time(cursor / SAMPLE_RATE) - OPUS_LOOKAHEAD_SECONDS)
        if p.closed:
            self.stop()
            raise MediaStreamError
        samples = p.take_audio(FRAME_SAMPLES)
        self.frames_sent += 1
        base = round(p.base_time * SAMPLE_RATE)
        return s16_frame(samples, cursor - base)


class LatestFrameTrack(MediaStreamTrack):
    """Forwards a remote video track keeping at most a few frames (drops oldest, counted),
    so a slow encoder never lets aiortc's unbounded receive queue grow."""

    kind = "video"

    def __init__(self, source: MediaStreamTrack, max_frames: int = 2):
        super().__init__()
        self.source = source
        self._frames: collections.deque = collections.deque(maxlen=max_frames)
        self._event = asyncio.Event()
        self.dropped = 0
        self._task = asyncio.get_running_loop().create_task(self._pump())

    async def _pump(self) -> None:
        try:
            while True:
                frame = await self.source.recv()
                if len(self._frames) == self._frames.maxlen:
                    self.dropped += 1
                self._frames.append(frame)
                self._event.set()
        except MediaStreamError:
            self._event.set()

    async def recv(self):
        while not self._frames:
            if self._task.done():
                self.stop()
                raise MediaStreamError
            self._event.clear()
            await self._event.wait()
        return self._frames.popleft()

    def stop(self) -> None:
        super().stop()
        self._task.cancel()


class CameraFeed(MediaStreamTrack):
    """One cloud connection's view of the session's camera pump. aiortc stops a sender's
    track when the connection closes; stopping this view leaves the pump running for the
    connection that replaces it."""

    kind = "video"

    def __init__(self, pump: LatestFrameTrack):
        super().__init__()
        self.pump = pump

    async def recv(self):
        return await self.pump.recv()
