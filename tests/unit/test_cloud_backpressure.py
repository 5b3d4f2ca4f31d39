"""A cloud sender that falls behind holds the runner back, and video stays bounded (issue 17).

A MediaBuffer on a fake clock, fed the way the runner feeds it (a chunk whenever the lead
is under its target) and read the way the output tracks read it, at a chosen fraction of
real time. Before: a slow sender's unplayed audio overflowed the ring, each skip moved the
clock forward, so the runner generated ever faster, and video piled up unbounded.
"""

from __future__ import annotations

import asyncio

import numpy as np

from scope_relay.cloud.sessions.media_buffer import SENDER_LAG_TOLERANCE, MediaBuffer
from scope_relay.protocol.media import FRAME_SAMPLES, OPUS_LOOKAHEAD_SECONDS, SAMPLE_RATE

STEP = FRAME_SAMPLES / SAMPLE_RATE  # 20 ms
FPS = 24
CHUNK = 0.5  # seconds per pipeline call
TARGET = 0.3  # the runner's target lead
PIXEL = np.zeros((1, 1, 3), np.uint8)


class Cloud:
    """One session's buffer, its runner and its two senders, on one fake clock."""

    def __init__(self, loop: asyncio.AbstractEventLoop, *, audio: bool = True):
        self.now = 100.0
        self.buffer = MediaBuffer(loop, clock=lambda: self.now, audio_clocked=audio)
        self.generated = 0.0  # media seconds the runner produced
        self.audio_sent = 0
        self.video_lateness: list[float] = []
        self.most_video_queued: float = 0
        self._credit = {"audio": 0.0, "video": 0.0}

    def generate(self) -> None:
        """At most one call per 20 ms: a fast model, 25 times real time."""
        if self.buffer.lead() < TARGET:
            start = self.generated
            video = [(start + k / FPS, PIXEL) for k in range(round(CHUNK * FPS))]
            audio = np.full((2, round(CHUNK * SAMPLE_RATE)), 0.1, np.float32)
            self.buffer.push(video, audio if self.buffer.audio_clocked else None, 1 / FPS)
            self.generated += CHUNK

    def send_audio(self, speed: float) -> None:
        """TimedAudioTrack: each frame at its release time, at most ``speed`` per 20 ms."""
        buf = self.buffer
        self._credit["audio"] = min(self._credit["audio"] + speed, max(1.0, speed))
        while self._credit["audio"] >= 1:
            assert buf.epoch is not None
            due = buf.epoch + buf.audio_output_samples() / SAMPLE_RATE + buf.playout_delay
            if due - OPUS_LOOKAHEAD_SECONDS > self.now:
                return
            buf.catch_up_audio(OPUS_LOOKAHEAD_SECONDS)
            buf.take_audio(FRAME_SAMPLES)
            self.audio_sent += 1
            self._credit["audio"] -= 1

    def send_video(self, speed: float) -> None:
        """TimedVideoTrack: the next frame once due, at most ``speed`` frames per 20 ms."""
        buf = self.buffer
        self._credit["video"] = min(self._credit["video"] + speed, max(1.0, speed))
        while self._credit["video"] >= 1:
            item = buf.pop_video()
            if item is None:
                return
            if buf.release_time(item[0]) > self.now:
                buf._video.appendleft(item)  # not due yet: the track would wait for it
                return
            self.video_lateness.append(self.now - buf.release_time(item[0]))
            self._credit["video"] -= 1

    def run(self, seconds: float, audio_speed: float = 1e9, video_speed: float = 1e9) -> None:
        for _ in range(round(seconds / STEP)):
            self.now += STEP
            self.generate()
            if self.buffer.audio_clocked:
                self.send_audio(audio_speed)
            self.send_video(video_speed)
            self.most_video_queued = max(self.most_video_queued,
                                         self.buffer.stats()["video_queue_frames"])


async def test_a_slow_sender_holds_the_runner_back():
    cloud = Cloud(asyncio.get_running_loop())
    cloud.run(20.0, audio_speed=0.5, video_speed=0.3)  # both at ~half speed: starved of CPU
    sent = cloud.audio_sent * STEP
    assert 9.0 <= sent <= 10.5
    # the runner made what could be sent, plus its lead: not 20 s, not more
    assert cloud.generated <= sent + TARGET + CHUNK + SENDER_LAG_TOLERANCE, cloud.generated
    stats = cloud.buffer.stats()
    assert stats["skipped_ms"] == 0  # the ring never overflowed
    assert stats["sender_lags"] > 0 and stats["sender_lag_ms"] > 9000, stats
    # video stays on the audio's clock: the slow video sender skips, it does not drift
    assert stats["skipped_video_frames"] > 0
    assert max(cloud.video_lateness) < 0.25, max(cloud.video_lateness)
    assert cloud.most_video_queued <= (TARGET + CHUNK + 2 * SENDER_LAG_TOLERANCE) * FPS + 2


async def test_a_slow_video_sender_alone_skips_frames_and_stays_bounded():
    cloud = Cloud(asyncio.get_running_loop())
    cloud.run(20.0, video_speed=0.24)  # 12 frames a second for a 24 fps stream
    assert cloud.generated <= 20.0 + TARGET + CHUNK + 0.2  # real time, no more
    stats = cloud.buffer.stats()
    assert stats["sender_lags"] == 0 and stats["skipped_ms"] == 0
    assert stats["skipped_video_frames"] > 200, stats
    assert max(cloud.video_lateness) < 0.1
    assert cloud.most_video_queued <= (TARGET + CHUNK) * FPS + 2


async def test_video_nobody_takes_is_bounded():
    cloud = Cloud(asyncio.get_running_loop(), audio=False)  # video-only: no audio clock
    cloud.run(20.0, video_speed=0.0)
    assert cloud.most_video_queued <= cloud.buffer.max_buffer * FPS + 2
    assert cloud.buffer.stats()["dropped_video_frames"] > 0
