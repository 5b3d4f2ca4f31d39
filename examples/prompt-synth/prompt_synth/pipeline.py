"""``prompt-synth``: the prompt text becomes a chord and a flowing picture in its colours,
pulsing together; a new prompt crossfades in over ``crossfade`` seconds."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from scope_relay.cloud.pipelines import InputFrame, ParamSpec, Pipeline, PipelineOutput

from .features import Features, features
from .render import mixed, picture, voice

#: prompt changes that may overlap in one crossfade; beyond this the oldest cuts out
MAX_LAYERS = 8


@dataclass
class Layer:
    """One prompt mix, fading in from media time ``start`` over ``fade`` seconds."""

    key: tuple[tuple[str, float], ...]
    mix: tuple[tuple[Features, float], ...]
    start: float
    fade: float

    def ramp(self, t: torch.Tensor) -> torch.Tensor:
        """0 -> 1 over the fade, raised cosine (its slope starts and ends at zero)."""
        if self.fade <= 0:
            return (t >= self.start).to(t.dtype)
        x = torch.clamp((t - self.start) / self.fade, 0.0, 1.0)
        return 0.5 - 0.5 * torch.cos(math.pi * x)


def layer_gains(layers: Sequence[Layer], t: torch.Tensor) -> list[torch.Tensor]:
    """Each layer's gain at times ``t``: its own ramp times what every newer layer leaves
    over. The first layer's ramp counts as 1, so the gains always sum to exactly 1."""
    gains = []
    remaining = torch.ones_like(t)
    for i in range(len(layers) - 1, -1, -1):
        ramp = layers[i].ramp(t) if i else torch.ones_like(t)
        gains.append(ramp * remaining)
        remaining = remaining * (1 - ramp)
    return gains[::-1]


class PromptSynth(Pipeline):
    """Audio and video from one media clock: every call renders ``chunk_frames`` frames and
    exactly their span of audio (2000 samples a frame), so a chunk's audio starts with its
    first frame."""

    pipeline_id = "prompt-synth"
    name = "Prompt synth (generative A/V)"
    produces_video = True
    produces_audio = True
    fps = 24.0
    sample_rate = 48_000
    chunk_frames = 12  # 0.5 s per call: short enough for prompt changes to land quickly
    size = (240, 320)  # H, W
    params = {
        # Weighted prompts: each one's chord and picture, mixed by weight.
        "prompts": ParamSpec("prompts", [{"text": "a slow warm sunrise", "weight": 1.0}],
                             "weighted text prompts: they pick chord, timbre, tempo, colours"),
        # How long a new prompt takes to replace the old one (sound and picture alike).
        "crossfade": ParamSpec("number", 1.0, "seconds to crossfade to new prompts", 0.0, 10.0),
        "volume": ParamSpec("number", 0.5, "output level, 0..1", 0.0, 1.0),
    }

    def __init__(self, device: str = "cpu"):
        super().__init__(device)
        self._frame = 0
        self._layers: list[Layer] = []
        h, w = self.size
        aspect = h / w
        y = torch.linspace(-aspect, aspect, h, device=device)[:, None].expand(h, w)
        x = torch.linspace(-1.0, 1.0, w, device=device)[None, :].expand(h, w)
        self._grid = (x, y, torch.hypot(x, y))

    def __call__(self, inputs: Sequence[InputFrame] | None,
                 params: Mapping[str, Any]) -> PipelineOutput:
        fps, sr, n = int(self.fps), self.sample_rate, self.chunk_frames
        per_frame = sr // fps
        start = self._frame / self.fps
        self._follow_prompts(params, start)
        t_video = torch.arange(self._frame, self._frame + n, device=self.device,
                               dtype=torch.float64) / self.fps
        t_audio = torch.arange(self._frame * per_frame, (self._frame + n) * per_frame,
                               device=self.device, dtype=torch.float64) / sr
        video = torch.zeros((n, *self.size, 3), device=self.device)
        audio = torch.zeros_like(t_audio)
        for layer, gv, ga in zip(self._layers, layer_gains(self._layers, t_video),
                                 layer_gains(self._layers, t_audio), strict=True):
            if float(gv.max()) > 0:
                video += gv.float().view(-1, 1, 1, 1) * mixed(layer.mix, picture, t_video,
                                                              self._grid)
            if float(ga.max()) > 0:
                audio += ga * mixed(layer.mix, voice, t_audio)
        self._frame += n
        self._forget_faded(t_audio[-1:])
        level = 0.9 * float(params["volume"])
        stereo = (audio * level).to(torch.float32).expand(2, -1)
        return PipelineOutput(video=torch.clamp(video, 0.0, 1.0), audio=stereo,
                              sample_rate=sr, fps=self.fps)

    def _follow_prompts(self, params: Mapping[str, Any], now: float) -> None:
        """A changed prompt list starts a new layer fading in at ``now``."""
        prompts = params.get("prompts") or [{"text": "", "weight": 1.0}]
        key = tuple((p["text"].strip().lower(), max(0.0, float(p.get("weight", 1.0))))
                    for p in prompts)
        if self._layers and self._layers[-1].key == key:
            return
        mix = tuple((features(text), weight) for text, weight in key)
        fade = float(params["crossfade"]) if self._layers else 0.0
        self._layers.append(Layer(key, mix, now, fade))
        del self._layers[:-MAX_LAYERS]

    def _forget_faded(self, t_end: torch.Tensor) -> None:
        """Layers wholly covered by a newer, fully faded-in one are silent for good."""
        for i in range(len(self._layers) - 1, 0, -1):
            if float(self._layers[i].ramp(t_end)[0]) >= 1.0:
                del self._layers[:i]
                return
