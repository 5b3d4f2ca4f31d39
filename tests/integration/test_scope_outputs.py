"""Scope-style pipelines (``__call__`` returns ``{"video", "audio", "audio_sample_rate"}``)
stream through the real cloud app and relay as cleanly as the built-ins: a 44.1 kHz stereo
one (torch) and a 16 kHz mono one (numpy), judged against test-tone on the same path."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from scope_relay.cloud.app import STATE_KEY
from scope_relay.cloud.pipelines import Pipeline
from scope_relay.testing import dominant_frequency

from helpers.peers import connected

SECONDS = 0.1  # per call
#: not a whole number of cycles per 20 ms Opus frame, so the tone's phase against the
#: frames drifts and every run sees the codec's average noise, not one phase's luck
TONE = 997.0
#: received audio judged: past the start-up (first sender report, resampler warm-up)
SKIP_FRAMES, JUDGE_FRAMES = 40, 100
#: purity may fall short of the built-in's by this much. Measured here over runs: test-tone
#: 41.7-42.1 dB (Opus-limited), the 16 kHz mono dict within 0.5 dB of it, the 44.1 kHz
#: stereo one 0-5 dB above it; a click per chunk or a wrong rate costs far more.
PURITY_SLACK_DB = 3.0


class ScopeStereo44k(Pipeline):
    """Torch, 44.1 kHz, stereo: 997 Hz left, 1499 Hz right (so a channel swap shows)."""

    pipeline_id = "scope-stereo-44k"
    name = "Scope-style stereo 44.1 kHz"
    produces_audio = True
    sample_rate = 44_100
    freqs = (TONE, 1499.0)

    def __init__(self, device: str = "cpu"):
        super().__init__(device)
        self.sample = 0

    def __call__(self, inputs, params):
        n = int(SECONDS * 44_100)
        t = torch.arange(self.sample, self.sample + n, dtype=torch.float64) / 44_100
        self.sample += n
        audio = torch.stack([0.5 * torch.sin(2 * math.pi * f * t) for f in self.freqs])
        return {"audio": audio.float(), "audio_sample_rate": 44_100, "frame_meta": {}}


class ScopeMono16k(Pipeline):
    """Numpy, 16 kHz, mono ``(1, samples)``: 997 Hz."""

    pipeline_id = "scope-mono-16k"
    name = "Scope-style mono 16 kHz"
    produces_audio = True
    sample_rate = 16_000
    freqs = (TONE, TONE)  # mono, duplicated to both channels

    def __init__(self, device: str = "cpu"):
        super().__init__(device)
        self.sample = 0

    def __call__(self, inputs, params):
        n = int(SECONDS * 16_000)
        t = np.arange(self.sample, self.sample + n) / 16_000
        self.sample += n
        return {"audio": (0.5 * np.sin(2 * math.pi * TONE * t))[None].astype(np.float32),
                "audio_sample_rate": 16_000}


def purity_db(x: np.ndarray, freq: float, rate: int = 48_000) -> float:
    """Tone power over everything else, after a least-squares fit of the tone (and DC)."""
    t = np.arange(len(x)) / rate
    basis = np.stack([np.sin(2 * np.pi * freq * t), np.cos(2 * np.pi * freq * t),
                      np.ones_like(t)], axis=1)
    coef, *_ = np.linalg.lstsq(basis, x.astype(np.float64), rcond=None)
    fit = basis @ coef
    return float(10 * np.log10(np.sum(fit ** 2) / max(np.sum((x - fit) ** 2), 1e-9)))


def window_purity(x: np.ndarray, freq: float, window: int = 4800) -> float:
    """The median over 100 ms windows: one late packet on a loaded box is not the tone."""
    return float(np.median([purity_db(x[i:i + window], freq)
                            for i in range(0, len(x) - window + 1, window)]))


async def received_tone(relay_url: str, params: dict) -> np.ndarray:
    """``(2, n)`` int16 received by a page-like peer, past the start-up."""
    async with connected(relay_url, params, video=False) as peer:
        await peer.wait_audio_frames(SKIP_FRAMES + JUDGE_FRAMES, timeout=30)
        return np.concatenate(peer.received.audio[SKIP_FRAMES:SKIP_FRAMES + JUDGE_FRAMES], axis=1)


async def test_scope_style_dict_pipelines_stream_clean_audio(stack):
    cloud, relay = stack
    registry = cloud.app[STATE_KEY].registry
    for cls in (ScopeStereo44k, ScopeMono16k):
        registry.register(cls)

    # the built-in's purity on this path, as the reference: a continuous tone
    builtin = await received_tone(relay.url, {"pipeline_ids": ["test-tone"], "frequency": TONE,
                                              "interval": 60, "duration": 60})
    reference = min(window_purity(channel, TONE) for channel in builtin)
    assert reference > 20, reference  # (a sanity check of the measurement itself)

    for cls in (ScopeStereo44k, ScopeMono16k):
        audio = await received_tone(relay.url, {"pipeline_ids": [cls.pipeline_id]})
        for channel, freq in zip(audio, cls.freqs, strict=True):
            assert dominant_frequency(channel, 48_000) == pytest.approx(freq, rel=0.01), cls
            purity = window_purity(channel, freq)
            print(f"{cls.pipeline_id} {freq:g} Hz: purity {purity:.1f} dB "
                  f"(test-tone {reference:.1f} dB)")
            assert purity >= reference - PURITY_SLACK_DB, (cls.pipeline_id, freq, purity, reference)
