"""prompt-synth: a generative audio+video piece for scope-relay, driven by ``prompts``."""

from .features import Features, features
from .pipeline import PromptSynth

__all__ = ["Features", "PromptSynth", "features"]
