"""``voice-fx``: the microphone through a live pitch shifter and ring modulator.

It shows the audio-input side of the pipeline API: ``accepts_audio = True``, the input
chunks in ``inputs.audio`` (48 kHz float32 on the media clock), one block of output per
block of input. The effect itself is in :mod:`.voice_dsp` (torch, streaming, no clicks).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from scope_relay.cloud.builtin_pipelines.voice_dsp import MAX_SEMITONES, VoiceChain
from scope_relay.cloud.pipelines.base import (
    InputFrame,
    ParamSpec,
    Pipeline,
    PipelineInputs,
    PipelineOutput,
    join_audio,
)


class VoiceFx(Pipeline):
    """Pitch shift (``pitch`` semitones), ring modulation (``ring`` Hz, 0 = off) and a
    dry/wet ``mix``, on the microphone, about 50 ms behind it."""

    pipeline_id = "voice-fx"
    name = "Voice FX (microphone)"
    produces_audio = True
    accepts_audio = True
    sample_rate = 48_000
    params = {
        "pitch": ParamSpec("number", 0.0, "pitch shift in semitones", -MAX_SEMITONES,
                           MAX_SEMITONES),
        "ring": ParamSpec("number", 0.0, "ring modulator frequency in Hz (0: off)", 0.0, 2000.0),
        "mix": ParamSpec("number", 1.0, "dry/wet: 0 the plain microphone, 1 only the effect",
                         0.0, 1.0),
    }

    def __init__(self, device: str = "cpu"):
        super().__init__(device)
        self._chain: VoiceChain | None = None
        self._rate: int | None = None

    def __call__(self, inputs: Sequence[InputFrame] | None,
                 params: Mapping[str, Any]) -> PipelineOutput | None:
        # a pipeline that accepts audio is called with PipelineInputs: frames + .audio
        block = join_audio(inputs.audio if isinstance(inputs, PipelineInputs) else [])
        if block is None:
            return None
        if self._chain is None or block.sample_rate != self._rate:
            self._chain, self._rate = VoiceChain(block.sample_rate, self.device), block.sample_rate
        # the voice is mono: one channel of work, not two copies of it
        mono = torch.from_numpy(block.samples).to(self.device).mean(dim=0, keepdim=True)
        out = self._chain.process(mono, float(params["pitch"]), float(params["ring"]),
                                  float(params["mix"]))
        return PipelineOutput(audio=out, sample_rate=block.sample_rate)
