"""Built-in torch pipelines: small, deterministic, and each useful for a measurement."""

from __future__ import annotations

import functools
import hashlib
import math
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from scope_relay.cloud.builtin_pipelines.beat_flash import BeatFlash
from scope_relay.cloud.builtin_pipelines.colour_field import ColourField
from scope_relay.cloud.builtin_pipelines.hd_test import HdTest
from scope_relay.cloud.builtin_pipelines.palette import palette, prompt_text
from scope_relay.cloud.builtin_pipelines.voice_fx import VoiceFx
from scope_relay.cloud.pipelines.base import InputFrame, ParamSpec, Pipeline, PipelineOutput

FRAME_SIZE = (240, 320)  # H, W: cheap to encode on a CPU


class Passthrough(Pipeline):
    """Returns its input frames unchanged, on their own media times."""

    pipeline_id = "passthrough"
    name = "Passthrough"
    produces_video = True
    accepts_video = True
    fps = 30.0

    def __call__(self, inputs: Sequence[InputFrame] | None,
                 params: Mapping[str, Any]) -> PipelineOutput | None:
        if not inputs:
            return None
        frames = torch.stack([torch.from_numpy(f.rgb) for f in inputs]).to(self.device)
        return PipelineOutput(video=frames, video_times=[f.media_time for f in inputs])


def _fade(n: int, length: int, device: str) -> torch.Tensor:
    """Raised-cosine ramp of ``length`` samples up and down over ``n`` samples (no clicks)."""
    env = torch.ones(n, device=device)
    ramp = min(length, n // 2)
    if ramp:
        up = 0.5 - 0.5 * torch.cos(torch.linspace(0, math.pi, ramp, device=device))
        env[:ramp] = up
        env[n - ramp:] = up.flip(0)
    return env


class TestTone(Pipeline):
    """Mono 24 kHz beeps: ``frequency`` Hz for ``duration`` s every ``interval`` s.

    The oscillator phase is continuous across chunks and frequency changes, and each beep
    fades in and out over 5 ms, so neither a chunk boundary nor a change clicks.
    """

    pipeline_id = "test-tone"
    name = "Test tone"
    produces_audio = True
    sample_rate = 24_000
    chunk_seconds = 0.1
    params = {
        "frequency": ParamSpec("number", 440.0, "tone frequency in Hz", 20.0, 11_000.0),
        "interval": ParamSpec("number", 1.0, "seconds from one beep to the next", 0.05, 60.0),
        "duration": ParamSpec("number", 0.5, "beep length in seconds", 0.01, 60.0),
        "volume": ParamSpec("number", 0.5, "amplitude, 0..1", 0.0, 1.0),
    }

    def __init__(self, device: str = "cpu"):
        super().__init__(device)
        self._sample = 0  # absolute sample index
        self._phase = 0.0  # radians, carried across chunks

    def __call__(self, inputs: Sequence[InputFrame] | None,
                 params: Mapping[str, Any]) -> PipelineOutput:
        sr = self.sample_rate
        n = int(self.chunk_seconds * sr)
        idx = torch.arange(self._sample, self._sample + n, device=self.device, dtype=torch.float64)
        step = 2 * math.pi * float(params["frequency"]) / sr
        phase = self._phase + step * torch.arange(1, n + 1, device=self.device, dtype=torch.float64)
        self._phase = float(phase[-1]) % (2 * math.pi)
        period = max(1, round(float(params["interval"]) * sr))
        length = min(period, max(1, round(float(params["duration"]) * sr)))
        pos = torch.remainder(idx, period)
        ramp = int(0.005 * sr)
        env = torch.zeros(n, dtype=torch.float64, device=self.device)
        inside = pos < length
        up = torch.clamp(pos / ramp, 0, 1)
        down = torch.clamp((length - pos) / ramp, 0, 1)
        env[inside] = (0.5 - 0.5 * torch.cos(math.pi * torch.minimum(up, down)))[inside]
        audio = (float(params["volume"]) * env * torch.sin(phase)).to(torch.float32)
        self._sample += n
        return PipelineOutput(audio=audio.unsqueeze(0), sample_rate=sr)


class AvSync(Pipeline):
    """24 fps video and 48 kHz stereo audio: once per second a white frame and a 1 kHz
    click start at the same media time; silent otherwise, and in between a dim picture
    (mean luma well under half, so the flash stays the one bright frame a measurement
    looks for): a still wash of deep blue and violet, a line sweeping across once a second
    and a bar that grows along the bottom and is full at the flash, so the eye sees the
    beat coming. The frames are made as YUV (``video_format="yuv420p"``), as a
    pipeline that wants no colour conversion does: one second of background is made once
    and reused, so a chunk costs a copy."""

    pipeline_id = "av-sync"
    name = "A/V sync test"
    produces_video = True
    produces_audio = True
    fps = 24.0
    sample_rate = 48_000
    chunk_frames = 12
    click_seconds = 0.02
    params = {"volume": ParamSpec("number", 0.8, "click amplitude, 0..1", 0.0, 1.0)}

    def __init__(self, device: str = "cpu"):
        super().__init__(device)
        self._frame = 0
        self._background = _av_sync_background(int(self.fps)).to(self.device)

    def __call__(self, inputs: Sequence[InputFrame] | None,
                 params: Mapping[str, Any]) -> PipelineOutput:
        fps, sr = int(self.fps), self.sample_rate
        per_frame = sr // fps
        h, w = FRAME_SIZE
        index = (torch.arange(self.chunk_frames) + self._frame) % fps
        video = self._background[index.to(self.device)]  # (a copy: the flash goes in it)
        audio = torch.zeros((2, self.chunk_frames * per_frame), device=self.device)
        click_len = int(self.click_seconds * sr)
        t = torch.arange(click_len, device=self.device) / sr
        click = float(params["volume"]) * torch.sin(2 * math.pi * 1000.0 * t) * _fade(
            click_len, int(0.002 * sr), self.device)
        for k in range(self.chunk_frames):
            if (self._frame + k) % fps == 0:
                video[k, :h] = 235  # white
                video[k, h:] = 128
                start = k * per_frame
                audio[:, start:start + click_len] = click
        self._frame += self.chunk_frames
        return PipelineOutput(video=video, audio=audio, sample_rate=sr, fps=self.fps,
                              video_format="yuv420p")


@functools.lru_cache(maxsize=4)
def _av_sync_background(fps: int) -> torch.Tensor:
    """One second of av-sync's dim picture as I420 frames ``(fps, H * 3 / 2, W)``: a still
    blue-to-violet wash (luma 20-70), a line sweeping across once a second and a bar along
    the bottom, full on the last frame before the flash. Only the line and the bar move, so
    a frame costs the encoder little more than a black one did. Made once (numpy) and
    shared: sessions index copies out of it, never write to it."""
    h, w = FRAME_SIZE
    y = np.linspace(0, 1, h)[:, None]
    x = np.linspace(0, 1, w)[None, :]
    wave = 0.5 + 0.5 * np.sin(2 * np.pi * (0.6 * x + 0.4 * y))
    chroma = wave[::2, ::2].reshape(-1)
    still = np.concatenate([(20 + 50 * wave).reshape(-1), 150 + 20 * chroma, 120 + 25 * chroma])
    frames = np.repeat(np.round(still).astype(np.uint8).reshape(1, h * 3 // 2, w), fps, axis=0)
    for k in range(fps):
        line = int((w - 6) * k / max(1, fps - 1))
        frames[k, :h - 10, line:line + 6] = 95
        frames[k, h - 8:h, :int(w * (k + 1) / fps)] = 110
    return torch.from_numpy(frames)


def prompt_seed(params: Mapping[str, Any]) -> int:
    """A number derived from the prompt text: it picks bursty-av's chord."""
    text = " ".join(p["text"] for p in params.get("prompts") or [])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big")


class BurstyAv(Pipeline):
    """Like big audio+video diffusion models: 2 s of 24 fps video and 24 kHz stereo audio
    per call, after ``generation_delay`` s of "thinking". The prompt picks the colour (its
    colour words: "a calm blue sea" is blue, cloud/builtin_pipelines/palette.py) and the
    chord, so a prompt change is visible and audible."""

    pipeline_id = "bursty-av"
    name = "Bursty A/V generator"
    produces_video = True
    produces_audio = True
    fps = 24.0
    sample_rate = 24_000
    chunk_seconds = 2.0
    params = {
        "prompts": ParamSpec("prompts", [{"text": "a calm blue sea", "weight": 1.0}],
                             "weighted text prompts"),
        "generation_delay": ParamSpec("number", 1.5, "seconds spent per call", 0.0, 30.0),
    }

    def __init__(self, device: str = "cpu"):
        super().__init__(device)
        self._frame = 0
        self._sample = 0
        self._stop = threading.Event()

    def __call__(self, inputs: Sequence[InputFrame] | None,
                 params: Mapping[str, Any]) -> PipelineOutput:
        self._stop.wait(float(params["generation_delay"]))  # stands in for GPU work
        seed = prompt_seed(params)
        fps, sr = int(self.fps), self.sample_rate
        frames, samples = int(self.chunk_seconds * fps), int(self.chunk_seconds * sr)
        h, w = FRAME_SIZE
        colour = torch.tensor([round(c * 255) for c in palette(prompt_text(params)).primary],
                              device=self.device, dtype=torch.float32)
        x = torch.linspace(0, 1, w, device=self.device)
        k = torch.arange(self._frame, self._frame + frames, device=self.device)[:, None]
        sweep = 0.5 + 0.5 * torch.sin(2 * math.pi * (x[None, :] + k / (2 * fps)))  # (T, W)
        video = (sweep[:, None, :, None] * colour).expand(frames, h, w, 3).to(torch.uint8)
        base = 110.0 * 2 ** ((seed % 24) / 12)
        t = torch.arange(self._sample, self._sample + samples, device=self.device,
                         dtype=torch.float64) / sr
        tone = torch.stack([torch.sin(2 * math.pi * base * r * t) for r in (1.0, 1.25, 1.5)]).sum(0) / 6
        audio = torch.stack([tone, tone * 0.8]).to(torch.float32)
        self._frame += frames
        self._sample += samples
        return PipelineOutput(video=video, audio=audio, sample_rate=sr, fps=self.fps)

    def close(self) -> None:
        self._stop.set()


#: in the order the page lists them: the first is what a newcomer's page shows first
BUILTIN_PIPELINES: tuple[type[Pipeline], ...] = (ColourField, Passthrough, TestTone, AvSync,
                                                 BurstyAv, VoiceFx, BeatFlash, HdTest)
