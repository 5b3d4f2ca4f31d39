"""``beat-flash``: a white flash and a click on every beat, longer on the bar's first, placed
from ``inputs.tempo`` at the media time they are made for: what the relay's tempo source
says is a beat is where the audience sees and hears one. A measuring instrument for the
tempo path (docs/tempo.md), and the smallest example of a tempo-aware pipeline.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from scope_relay.cloud.pipelines.base import ParamSpec, Pipeline, PipelineInputs, PipelineOutput
from scope_relay.protocol.tempo import TempoGrid

FRAME_SIZE = (240, 320)  # H, W
#: above 30 fps the picture is smaller, so 60 fps costs no more to encode than 24
SMALL_FRAME_SIZE = (120, 160)
#: without a tempo from the relay: 120 BPM from media time 0, so it still shows something
FREE_RUNNING = TempoGrid(120.0, 0.0, 4, True)
#: seconds: a beat's click and flash, and the bar's first beat's
BEAT_SECONDS = 0.03
DOWNBEAT_SECONDS = 0.12
#: the click's onset ramp: short, so the onset is sharp to measure, yet no DC step
RAMP_SECONDS = 0.0005


class BeatFlash(Pipeline):
    """YUV video at ``fps`` (24 by default, up to 60: a flash is within half a frame of its
    beat) and 48 kHz stereo audio in quarter-second chunks."""

    pipeline_id = "beat-flash"
    name = "Beat flash (tempo test)"
    produces_video = True
    produces_audio = True
    fps = 24.0
    sample_rate = 48_000
    chunk_frames = 6
    params = {
        "volume": ParamSpec("number", 0.8, "click amplitude, 0..1", 0.0, 1.0),
        "brightness": ParamSpec("number", 1.0, "flash brightness, 0..1", 0.0, 1.0),
        "fps": ParamSpec("integer", 24, "frames a second: a flash is within half a frame "
                         "of its beat (above 30, a smaller picture)", 24, 60, label="FPS"),
    }

    def __call__(self, inputs: Any, params: Mapping[str, Any]) -> PipelineOutput:
        start = inputs.media_time if isinstance(inputs, PipelineInputs) else 0.0
        timed = isinstance(inputs, PipelineInputs) and inputs.tempo is not None
        # clicks on the beat heard, flashes on the beat seen (the picture leads the sound)
        grid = inputs.tempo if timed else None
        grid = grid or FREE_RUNNING
        seen = (inputs.video_tempo if timed else None) or grid
        fps = float(int(params.get("fps", self.fps)))
        sr = self.sample_rate
        # the same length of media a call at any rate: 6 frames at 24 fps, 8 at 30, 15 at 60
        n = max(1, round(self.chunk_frames * fps / (self.fps or fps)))
        h, w = FRAME_SIZE if fps <= 30 else SMALL_FRAME_SIZE
        video = np.full((n, h * 3 // 2, w), 128, np.uint8)  # I420: chroma grey
        video[:, :h] = 16  # black luma
        samples = round(n * sr / fps)
        audio = np.zeros((2, samples), np.float32)
        if not grid.playing:
            return PipelineOutput(video=video, audio=audio, sample_rate=sr, fps=fps,
                                  video_format="yuv420p")
        base = float(params.get("brightness", 1.0))
        # each frame's own brightness: a modulation moves it frame by frame within the chunk
        whites = [16 + round(219 * float(inputs.parameter_at("brightness", start + k / fps, base)
                                         if isinstance(inputs, PipelineInputs) else base))
                  for k in range(n)]
        volume = float(params.get("volume", 0.8))
        end = start + samples / sr
        for beat in _beats(grid, start - DOWNBEAT_SECONDS, end):
            at = grid.time_of(beat)
            downbeat = beat % grid.beats_per_bar == 0
            length = DOWNBEAT_SECONDS if downbeat else BEAT_SECONDS
            # the click, sample-exact (it may have begun in the previous chunk)
            onset = round((at - start) * sr)
            click = _click(round(length * sr), sr, 2000.0 if downbeat else 1000.0) * volume
            lo, hi = max(onset, 0), min(onset + len(click), samples)
            if lo < hi:
                audio[:, lo:hi] = click[lo - onset:hi - onset]
        for beat in _beats(seen, start - DOWNBEAT_SECONDS, start + n / fps):
            at = seen.time_of(beat)
            length = DOWNBEAT_SECONDS if beat % seen.beats_per_bar == 0 else BEAT_SECONDS
            # the flash: the frames whose display interval begins within it (frame k shows
            # from start + k / fps), the first being the one nearest the beat, and that one
            # at least (a beat's flash is shorter than a frame)
            lit = max(length, 1 / fps)
            for k in range(n):
                t = start + k / fps
                if at - 0.5 / fps <= t < at + lit - 0.5 / fps:
                    video[k, :h] = whites[k]
        return PipelineOutput(video=video, audio=audio, sample_rate=sr, fps=fps,
                              video_format="yuv420p")


def _beats(grid: TempoGrid, start: float, end: float) -> range:
    """The whole beats that may fall between media times ``start`` and ``end``."""
    return range(math.floor(grid.beat_at(start).beat), math.ceil(grid.beat_at(end).beat) + 1)


def _click(samples: int, rate: int, hz: float) -> np.ndarray:
    t = np.arange(samples) / rate
    env = np.ones(samples, np.float32)
    ramp = max(1, round(RAMP_SECONDS * rate))
    env[:ramp] = np.linspace(0.0, 1.0, ramp, dtype=np.float32)
    env[-ramp:] = np.linspace(1.0, 0.0, ramp, dtype=np.float32)
    return (np.sin(2 * math.pi * hz * t) * env).astype(np.float32)
