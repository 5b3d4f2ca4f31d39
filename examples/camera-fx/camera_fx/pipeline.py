"""``camera-fx``: the camera, folded into a kaleidoscope, trailed by feedback or outlined by
glowing edges; every parameter is live."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from scope_relay.cloud.pipelines import InputFrame, ParamSpec, Pipeline, PipelineOutput

from . import effects

logger = logging.getLogger(__name__)
MODES = ("kaleidoscope", "feedback", "edge-glow")


class CameraFx(Pipeline):
    """Camera in, effect out, frame for frame on the camera's own media times."""

    pipeline_id = "camera-fx"
    name = "Camera FX (kaleidoscope / feedback / edge glow)"
    produces_video = True
    accepts_video = True
    fps = 30.0
    params = {
        # Which effect: "kaleidoscope", "feedback" or "edge-glow" (anything else: unchanged).
        "mode": ParamSpec("string", "kaleidoscope", "kaleidoscope | feedback | edge-glow"),
        # How strong: the kaleidoscope's mix over the camera, the feedback trail's
        # persistence, the glow's brightness.
        "amount": ParamSpec("number", 0.8, "effect strength, 0..1", 0.0, 1.0),
        # Hue rotation of the output in degrees (feedback also turns the trail's hue by a
        # tenth of it per frame, so trails cycle through colours).
        "hue_shift": ParamSpec("number", 0.0, "hue rotation in degrees", -180.0, 180.0),
        "segments": ParamSpec("integer", 6, "kaleidoscope mirror segments", 2, 24),
        "spin": ParamSpec("number", 0.05, "kaleidoscope turns per second", -2.0, 2.0),
    }

    def __init__(self, device: str = "cpu"):
        super().__init__(device)
        self._device = torch.device(device)
        self._folded: dict[tuple[int, int, int], tuple[torch.Tensor, torch.Tensor]] = {}
        self._zoom_grid: dict[tuple[int, int], torch.Tensor] = {}
        self._trail: torch.Tensor | None = None  # the feedback's last output (3, H, W)
        self._warned: set[str] = set()

    def __call__(self, inputs: Sequence[InputFrame] | None,
                 params: Mapping[str, Any]) -> PipelineOutput | None:
        if not inputs:
            return None  # the runner waits for camera frames
        rgb = torch.stack([torch.from_numpy(f.rgb) for f in inputs]).to(self._device)
        frames = rgb.permute(0, 3, 1, 2).to(torch.float32, memory_format=torch.contiguous_format)
        frames.mul_(1 / 255)  # (T, 3, H, W) in [0, 1]
        out = self.apply(frames, [f.media_time for f in inputs], params)
        video = out.mul(255.0).add_(0.5).to(torch.uint8).permute(0, 2, 3, 1).contiguous()
        return PipelineOutput(video=video, video_times=[f.media_time for f in inputs])

    def apply(self, frames: torch.Tensor, times: Sequence[float],
              params: Mapping[str, Any]) -> torch.Tensor:
        """The effect on ``(T, 3, H, W)`` floats in [0, 1] at media ``times`` (seconds)."""
        mode = str(params["mode"]).strip().lower().replace("_", "-")
        amount, hue = float(params["amount"]), float(params["hue_shift"])
        _, _, h, w = frames.shape
        if mode != "feedback":
            self._trail = None
        if mode == "kaleidoscope":
            key = (h, w, int(params["segments"]))
            grid = self._folded.get(key)
            if grid is None:
                if len(self._folded) > 8:  # sizes and segment counts seen: keep a few
                    self._folded.clear()
                grid = self._folded[key] = effects.folded_grid(*key, self._device)
            turns = torch.tensor(times, device=self._device) * float(params["spin"])
            folded = effects.kaleidoscope(frames, grid, turns)
            out = folded if amount >= 1.0 else torch.lerp(frames, folded, amount)
        elif mode == "feedback":
            zoom = self._zoom_grid.get((h, w))
            if zoom is None:
                if len(self._zoom_grid) > 8:
                    self._zoom_grid.clear()
                zoom = self._zoom_grid[(h, w)] = effects.zoom_rotate_grid(
                    h, w, 1.03, 0.02, self._device)
            if self._trail is not None and self._trail.shape[1:] != (h, w):
                self._trail = None  # the camera changed size
            out, self._trail = effects.feedback(frames, self._trail, zoom, 0.97 * amount,
                                                hue / 10.0)
        elif mode == "edge-glow":
            out = effects.edge_glow(frames, amount, effects.hue_colour(hue, self._device))
            hue = 0.0  # the glow's colour already carries the shift
        else:
            if mode not in self._warned and len(self._warned) < 16:  # once each, a few
                self._warned.add(mode)
                logger.warning("camera-fx: unknown mode %r (use one of %s); passing the "
                               "camera through", mode, ", ".join(MODES))
            out = frames
        return effects.rotate_hue(out, hue)
