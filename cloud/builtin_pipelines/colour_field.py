"""Built-in ``colour-field``: the demo's first impression, cheap enough for many sessions on
a 2-core box.

A smoothly moving field of the prompt's two colours (cloud/builtin_pipelines/palette.py)
that pulses on the beat, and a matching pad: a chord rooted on the prompt's hue (major
for warm colours, minor for cool ones), slightly detuned left and right, with a soft kick
on the same beats. Everything is numpy on separable terms (one outer product a frame),
so a frame costs a few array passes; a prompt change glides to its new colours and
chord over about a second instead of jumping.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from scope_relay.cloud.builtin_pipelines.palette import chord_root, is_warm, palette, prompt_text
from scope_relay.cloud.pipelines.base import ParamSpec, Pipeline, PipelineOutput

FRAME_SIZE = (240, 320)  # H, W: cheap to encode on a CPU
#: each frame moves the colours this much of the way to the prompt's (about 1 s to settle)
GLIDE = 0.12
#: the pad's voices: intervals (semitones) over the root, by chord quality
MAJOR, MINOR = (0, 4, 7, 11, 14), (0, 3, 7, 10, 14)
#: the left and right channels' detune (cents), for width
DETUNE_CENTS = 6.0
#: the colour table's steps: between the two colours, and of light (the vignette)
MIX_LEVELS, LIGHT_LEVELS = 128, 32
#: the vignette's light at the corners (1 at the centre)
EDGE_LIGHT = 0.55


class ColourField(Pipeline):
    """24 fps video and 48 kHz stereo audio, 0.5 s per call: the prompt's colours moving
    and pulsing with ``bpm``, and a pad with a soft kick on the same beat."""

    pipeline_id = "colour-field"
    name = "Colour field"
    produces_video = True
    produces_audio = True
    fps = 24.0
    sample_rate = 48_000
    chunk_frames = 12
    params = {
        "prompts": ParamSpec("prompts", [{"text": "a calm blue sea", "weight": 1.0}],
                             "weighted text prompts: colour words pick the colours and chord"),
        "bpm": ParamSpec("number", 96.0, "beats per minute of the pulse and the kick",
                         40.0, 200.0),
        "motion": ParamSpec("number", 0.5, "how fast the field moves, 0..1", 0.0, 1.0),
        "volume": ParamSpec("number", 0.6, "sound level, 0..1", 0.0, 1.0),
    }

    def __init__(self, device: str = "cpu"):
        super().__init__(device)
        h, w = FRAME_SIZE
        self._x = np.linspace(0.0, 1.0, w, dtype=np.float32)
        self._y = np.linspace(0.0, 1.0, h, dtype=np.float32)
        d2 = (self._y[:, None] - 0.5) ** 2 + ((self._x[None, :] - 0.5) * (w / h)) ** 2
        vignette = 1.0 - (1.0 - EDGE_LIGHT) * np.clip(d2 / 0.5, 0.0, 1.0)
        self._light_levels = np.linspace(EDGE_LIGHT, 1.0, LIGHT_LEVELS, dtype=np.float32)
        self._light_index = np.round((vignette - EDGE_LIGHT) / (1.0 - EDGE_LIGHT)
                                     * (LIGHT_LEVELS - 1)).astype(np.int32)
        self._t = 0.0  # field time: advances with motion
        self._beat = 0.0  # beats since the start (the phase carries across bpm changes)
        self._colours: np.ndarray | None = None  # (2, 3) current colours, 0..1
        self._phases = np.zeros((2, len(MAJOR)), np.float64)  # per channel, per voice
        self._freqs: np.ndarray | None = None  # (2, voices) current pad frequencies
        self._kick_phase = 0.0

    def __call__(self, inputs: Any, params: Any) -> PipelineOutput:
        text = prompt_text(params)
        colours = palette(text)
        target = np.array([colours.primary, colours.secondary], np.float32)
        if self._colours is None:
            self._colours = target.copy()
        bpm, motion = float(params["bpm"]), float(params["motion"])
        fps, sr, n = self.fps, self.sample_rate, self.chunk_frames
        per_frame = int(sr / fps)
        video = np.empty((n, *FRAME_SIZE, 3), np.uint8)
        beats = self._beat + np.arange(n * per_frame + 1) * (bpm / 60.0 / sr)
        for k in range(n):
            self._colours += GLIDE * (target - self._colours)
            self._t += (0.15 + 1.2 * motion) / fps
            video[k] = self._frame(beats[k * per_frame] % 1.0)
        audio = self._sound(colours.hue, beats[:-1], float(params["volume"]))
        self._beat = float(beats[-1] % 4096.0)
        return PipelineOutput(video=video, audio=audio, sample_rate=sr, fps=fps)

    def _frame(self, beat_phase: float) -> np.ndarray:
        """One frame: a mix of the two colours by a flowing separable pattern, brightened
        on the beat, darkened towards the edges. The colour of each (mix, light) pair comes
        from a small table made per frame, so the picture costs a few passes over its
        pixels, not a float multiply per channel."""
        t, x, y = self._t, self._x, self._y
        a = 0.5 + 0.3 * np.sin(2 * np.pi * (1.1 * x + 0.13 * t)) + 0.1 * np.sin(
            2 * np.pi * (2.3 * x - 0.07 * t))
        b = 0.3 * np.sin(2 * np.pi * (0.9 * y - 0.11 * t) + 1.7)
        c = np.sin(2 * np.pi * (0.7 * x + 0.05 * t)) * 0.25
        d = np.sin(2 * np.pi * (1.3 * y + 0.09 * t))
        mix = a[None, :] + b[:, None]
        mix += np.outer(d, c)
        np.clip(mix, 0.0, 1.0, out=mix)
        mix *= MIX_LEVELS - 1
        index = mix.astype(np.int32)
        index *= LIGHT_LEVELS
        index += self._light_index
        assert self._colours is not None
        pulse = 0.65 + 0.35 * math.exp(-5.0 * beat_phase)
        first, second = self._colours
        levels = np.linspace(0.0, 1.0, MIX_LEVELS, dtype=np.float32)[:, None]
        colours = first[None, :] + levels * (second - first)[None, :]  # (mix levels, 3)
        table = colours[:, None, :] * (255.0 * pulse * self._light_levels)[None, :, None]
        return np.take(table.reshape(-1, 3).astype(np.uint8), index, axis=0)

    def _sound(self, hue: float, beats: np.ndarray, volume: float) -> np.ndarray:
        """Stereo pad (phases continuous, frequencies gliding) plus a kick on each beat."""
        sr = self.sample_rate
        count = beats.size
        root = chord_root(hue)
        intervals = np.array(MAJOR if is_warm(hue) else MINOR, np.float64)
        target = root * 2 ** (intervals / 12)
        detune = 2 ** (np.array([-DETUNE_CENTS, DETUNE_CENTS]) / 1200)[:, None]
        target = target[None, :] * detune  # (2, voices)
        start = target if self._freqs is None else self._freqs
        self._freqs = target
        n = np.arange(count, dtype=np.float32)
        if np.allclose(start, target):  # steady: phase = phase0 + 2 pi f n / sr
            steps = (2 * np.pi * target / sr).astype(np.float32)[:, :, None]
            phases = self._phases[:, :, None].astype(np.float32) + steps * n
            ends = self._phases + 2 * np.pi * target / sr * count
        else:  # a new chord: each voice glides over the first half of the chunk
            glide = np.minimum(n / (count / 2), 1.0)[None, None, :]
            freqs = start[:, :, None] + (target - start)[:, :, None] * glide
            steps = (2 * np.pi * freqs / sr).astype(np.float32)
            phases = self._phases[:, :, None].astype(np.float32) + np.cumsum(steps, axis=2) - steps
            ends = self._phases + steps.sum(axis=2, dtype=np.float64)
        self._phases = ends % (2 * np.pi)
        weights = np.array([1.0, 0.7, 0.6, 0.35, 0.25], np.float32)[None, :, None]
        pad = (np.sin(phases) * weights).sum(axis=1) / weights.sum()  # (2, count)
        beat_phase = beats % 1.0
        swell = 0.8 + 0.2 * np.cos(2 * np.pi * beat_phase)  # breathes with the beat
        kick_env = np.exp(-beat_phase * 14.0) * (beat_phase < 0.5)
        kick_freq = 45.0 + 90.0 * np.exp(-beat_phase * 30.0)
        kick_steps = 2 * np.pi * kick_freq / sr
        kick_phase = self._kick_phase + np.cumsum(kick_steps) - kick_steps
        self._kick_phase = float((kick_phase[-1] + kick_steps[-1]) % (2 * np.pi))
        kick = np.sin(kick_phase) * kick_env
        mixed = volume * (0.35 * pad * swell + 0.45 * kick)
        return mixed.astype(np.float32)
