"""Output tracks that release frames at their media time (aiortc does no pacing itself)."""

from __future__ import annotations

import asyncio

import av
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

from scope_relay.cloud.sessions.media_buffer import MediaBuffer
from scope_relay.media.audio import float_to_s16, s16_frame
from scope_relay.media.pacing import sleep_until
from scope_relay.protocol.media import (
    FRAME_SAMPLES,
    OPUS_LOOKAHEAD_SECONDS,
    SAMPLE_RATE,
    VIDEO_TIME_BASE,
    video_pts,
)
from scope_relay.util.video_frames import video_frame

#: A video frame later than this stalls a video-only session's clock.
LATE_TOLERANCE = 0.005


class TimedAudioTrack(MediaStreamTrack):
    """48 kHz stereo, 20 ms packed-s16 frames; pts = position on the output timeline."""

    kind = "audio"

    def __init__(self, buffer: MediaBuffer):
        super().__init__()
        self.buffer = buffer
        self.clipped_samples = 0
        self.frames_sent = 0

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live" or self.buffer.closed:
            raise MediaStreamError
        buf = self.buffer
        await buf.started.wait()  # the first chunk may take a model minutes; close() wakes it
        if buf.closed:
            raise MediaStreamError
        pts = buf.audio_output_samples()
        assert buf.epoch is not None  # set with ``started``
        await sleep_until(buf.clock, buf.epoch + pts / SAMPLE_RATE + buf.playout_delay
                          - OPUS_LOOKAHEAD_SECONDS)
        if buf.closed:
            raise MediaStreamError
        buf.catch_up_audio(OPUS_LOOKAHEAD_SECONDS)  # fallen behind: the clock stalls to now
        pts = buf.audio_output_samples()
        samples, clipped = float_to_s16(buf.take_audio(FRAME_SAMPLES))
        self.clipped_samples += clipped
        self.frames_sent += 1
        return s16_frame(samples, pts)


class TimedVideoTrack(MediaStreamTrack):
    """Releases each video frame at its media time; pts on the same output timeline."""

    kind = "video"

    def __init__(self, buffer: MediaBuffer):
        super().__init__()
        self.buffer = buffer
        self.frames_sent = 0
        self.late_frames = 0
        self._last_pts = -1
        #: (when, media time) of the frame sent last, while more were queued behind it
        self._spaced_from: tuple[float, float] | None = None

    async def recv(self) -> av.VideoFrame:
        buf = self.buffer
        await buf.started.wait()
        while True:
            if self.readyState != "live" or buf.closed:
                raise MediaStreamError
            item = buf.pop_video()
            if item is not None:
                break
            await buf.wait_video(timeout=0.5)
        media_time, picture = item
        if buf.release_when_ready:
            await self._keep_spacing(media_time)
        else:
            await self._wait_release(media_time)
        # (H, W, 3) RGB, or a 2-D I420 frame from a pipeline that made YUV itself
        frame = video_frame(picture)
        pts = max(video_pts(buf.output_seconds(media_time)), self._last_pts + 1)
        self._last_pts = pts
        frame.pts = pts
        frame.time_base = VIDEO_TIME_BASE
        self.frames_sent += 1
        return frame

    async def _keep_spacing(self, media_time: float) -> None:
        """Released when made, except that frames made together (a model's chunk) keep
        their media spacing: a frame that was already queued when the one before it went
        out follows it by the difference of their media times. A frame made after that
        goes at once, so waits never add up over a session (a camera's clock and ours may
        drift apart), and a chunk reaches the relay as the paced frames it expects."""
        buf = self.buffer
        if self._spaced_from is not None:
            sent_at, sent_media_time = self._spaced_from
            await sleep_until(buf.clock, sent_at + max(0.0, media_time - sent_media_time))
        self._spaced_from = (buf.clock(), media_time) if buf.video_queued() else None

    async def _wait_release(self, media_time: float) -> None:
        """Until the frame's release time; a late frame in a video-only session stalls
        the clock by its lateness, so the frames after it keep their spacing."""
        buf = self.buffer
        while True:  # the clock may stall while we wait: re-read it
            deadline = buf.release_time(media_time)
            now = buf.clock()
            if deadline <= now + 0.001:
                break
            await asyncio.sleep(deadline - now)
        lateness = buf.clock() - buf.release_time(media_time)
        if lateness > LATE_TOLERANCE:
            self.late_frames += 1
            if not buf.audio_clocked:
                buf.stall_for(lateness)
