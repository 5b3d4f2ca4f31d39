"""What docs/pipelines.md says about a fractional number of samples per frame (44.1 kHz at
24 fps: 1837.5), checked on the real runner and buffer: a running sample counter keeps
audio continuous and frames on time; always rounding down inserts silence, always
rounding up makes the picture run slow."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from scope_relay.cloud.hosting.runner import PipelineRunner
from scope_relay.cloud.pipelines import Pipeline, PipelineOutput
from scope_relay.cloud.sessions.media_buffer import MediaBuffer

RATE, FPS, FRAMES = 44_100, 24.0, 48
LEVEL = 0.5  # constant audio: an inserted stretch of silence shows as a dip


class OneFramePerCall(Pipeline):
    pipeline_id = "one-frame"
    name = "One frame per call"
    produces_video = True
    produces_audio = True
    fps = FPS
    sample_rate = RATE

    def __init__(self, rounding: str):
        super().__init__("cpu")
        self.rounding = rounding
        self.frame = 0

    def samples(self) -> int:
        k = self.frame
        if self.rounding == "counter":
            return int((k + 1) * RATE // FPS) - int(k * RATE // FPS)
        return int(RATE / FPS) + (self.rounding == "up")

    def __call__(self, inputs, params):
        audio = np.full(self.samples(), LEVEL, np.float32)
        self.frame += 1
        return PipelineOutput(video=np.zeros((1, 4, 4, 3), np.uint8), audio=audio)


def run(rounding: str) -> tuple[np.ndarray, np.ndarray]:
    """Frame times (s) and the steady part of the 48 kHz left channel."""
    loop = asyncio.new_event_loop()
    try:
        buffer = MediaBuffer(loop, max_buffer=60.0)
        runner = PipelineRunner([OneFramePerCall(rounding)], buffer)
        for _ in range(FRAMES):
            assert runner.step()
        popped = [buffer.pop_video() for _ in range(FRAMES)]
        times = np.array([item[0] for item in popped if item is not None])
        assert len(times) == FRAMES  # every step made a frame, none held back
        audio = buffer.take_audio(buffer.audio_buffered)[0]
    finally:
        loop.close()
    return times, audio[4800:-4800]  # clear of the resampler's start and tail


def test_a_running_sample_counter_keeps_audio_continuous_and_frames_on_time():
    times, audio = run("counter")
    ideal = times[0] + np.arange(FRAMES) / FPS
    assert np.abs(times - ideal).max() <= 1 / RATE
    assert audio.min() > 0.9 * LEVEL


def test_always_rounding_down_puts_silence_into_the_audio():
    _, audio = run("down")
    assert audio.min() < 0.8 * LEVEL


def test_always_rounding_up_makes_the_picture_run_slow():
    times, audio = run("up")
    drift = times[-1] - times[0] - (FRAMES - 1) / FPS
    assert drift == pytest.approx((FRAMES - 1) * 0.5 / RATE, rel=0.05)
    assert audio.min() > 0.9 * LEVEL
