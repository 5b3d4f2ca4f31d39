"""camera-fx: a live camera effect for scope-relay (kaleidoscope, feedback, edge glow)."""

from .pipeline import MODES, CameraFx

__all__ = ["MODES", "CameraFx"]
