"""The relay's output tracks to the browser, released on the local clock by the
FrameProcessor's one shared offset."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import av
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

from scope_relay.local.playout.frame_processor import FrameProcessor
from scope_relay.media.audio import s16_frame
from scope_relay.media.pacing import sleep_until
from scope_relay.protocol.media import (
    FRAME_SAMPLES,
    OPUS_LOOKAHEAD_SECONDS,
    SAMPLE_RATE,
    VIDEO_TIME_BASE,
    video_pts,
)
from scope_relay.rtc.receive_path import EncodedVideo

logger = logging.getLogger(__name__)

#: Sees each frame, with its final pts, just before it goes to the browser (a recording).
#: Called on the event loop: it must return at once and must not change the frame.
FrameTap = Callable[[av.AudioFrame | av.VideoFrame], None]


def run_taps(taps: list[FrameTap], frame: av.AudioFrame | av.VideoFrame) -> None:
    for tap in taps:
        try:
            tap(frame)
        except Exception:  # a broken tap must never stop live playback
            logger.exception("frame tap failed")


def as_packet(frame: EncodedVideo) -> av.Packet:
    """An encoded frame as the ``av.Packet`` aiortc's senders ``pack`` without encoding."""
    packet = av.Packet(frame.data)
    packet.is_keyframe = frame.keyframe
    return packet


class CloudTrack(MediaStreamTrack):
    """Video from the cloud to the browser: decoded frames, or (forwarding) the cloud's
    encoded frames as ``av.Packet`` with their keyframe flag, either way at their release
    time with the session's pts. ``mime`` is the codec of the last packet released."""

    kind = "video"

    def __init__(self, processor: FrameProcessor):
        super().__init__()
        self.processor = processor
        self.frames_sent = 0
        self.packets_sent = 0
        self.bytes_sent = 0
        self.mime: str | None = None
        self._last_pts = -1
        #: see each decoded frame released (forwarded packets are not shown to them)
        self.taps: list[FrameTap] = []
        #: the session's lazy decoder (local/playout/decoder.py): pixels for a recording
        self.decoder: Any = None

    def request_keyframe(self, source: str) -> None:
        """Someone downstream needs a keyframe (forwarded video: asked of the cloud, unless
        one is queued here already, to be released within the playout delay)."""
        if self.processor.keyframe_queued():
            self.processor.counts.keyframe_requests_queued += 1
            return
        self.processor.request_keyframe(source)

    async def recv(self) -> av.VideoFrame | av.Packet:
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
        self.frames_sent += 1
        if isinstance(frame, EncodedVideo):
            packet = as_packet(frame)
            packet.pts = pts
            packet.time_base = VIDEO_TIME_BASE
            self.packets_sent += 1
            self.bytes_sent += len(frame.data)
            self.mime = frame.mime
            return packet
        frame.pts = pts
        frame.time_base = VIDEO_TIME_BASE
        run_taps(self.taps, frame)
        return frame


class AudioProcessingTrack(MediaStreamTrack):
    """48 kHz stereo 20 ms packed-s16 frames to the browser; bit-exact for 48 kHz s16 input."""

    kind = "audio"

    def __init__(self, processor: FrameProcessor):
        super().__init__()
        self.processor = processor
        self.frames_sent = 0
        self.taps: list[FrameTap] = []

    async def recv(self) -> av.AudioFrame:
        p = self.processor
        try:
            cursor = await p.first_audio()
        except EOFError:
            self.stop()
            raise MediaStreamError from None
        # until due under the delay as it is when the sleep ends: a queue on the hop may
        # have raised it meanwhile, and a slot read early would play its audio as lost
        while (due := p.release_time(cursor / SAMPLE_RATE) - OPUS_LOOKAHEAD_SECONDS) > p.clock():
            await sleep_until(p.clock, due)
        if p.closed:
            self.stop()
            raise MediaStreamError
        samples = p.take_audio(FRAME_SAMPLES)
        self.frames_sent += 1
        assert p.base_time is not None  # set by the first audio queued
        base = round(p.base_time * SAMPLE_RATE)
        frame = s16_frame(samples, cursor - base)
        run_taps(self.taps, frame)
        return frame
