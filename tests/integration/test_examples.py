"""The example plugins in examples/, installed like any third-party package (pip, into a
folder of their own on sys.path), found by the cloud app through their entry points, and
streamed cloud -> relay -> receiver with the public helper ``scope_relay.testing``; and
what that helper tells a plugin author whose pipeline breaks."""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from scope_relay.cloud.pipelines import ParamSpec, Pipeline, PipelineOutput
from scope_relay.testing import PipelineFailed, dominant_frequency, mean_colour, stream_pipeline

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def install(example: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``pip install`` a copy of the example (a build writes into its source folder) into a
    folder of its own, never the shared environment, and put that folder on ``sys.path``,
    where entry-point discovery looks. Returns the folder."""
    source, target = tmp_path / "source", tmp_path / "site"
    shutil.copytree(EXAMPLES / example, source,
                    ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                    "--no-build-isolation", "--target", str(target), str(source)],
                   check=True, timeout=120, capture_output=True)
    monkeypatch.syspath_prepend(str(target))
    return target


def difference(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference of two RGB frames, 0-255."""
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


async def test_camera_fx_changes_the_picture_and_follows_live_parameters(tmp_path, monkeypatch):
    site = install("camera-fx", tmp_path, monkeypatch)
    async with stream_pipeline("camera-fx", parameters={"mode": "edge-glow",
                                                        "amount": 1.0}) as session:
        assert session.capabilities.accepts_video and not session.capabilities.produces_audio
        camera = session.camera.image
        frames = await session.wait_video(5)
        assert frames[-1].shape == camera.shape
        assert difference(frames[-1], camera) > 40  # dark picture, glowing outlines
        # live: a kaleidoscope mixed in at 0 gives the camera back ...
        await session.send_parameters({"mode": "kaleidoscope", "amount": 0.0})
        await session.video_until(lambda f: difference(f[-1], camera) < 12)
        # ... and turning the hue half way round changes every colour
        await session.send_parameters({"hue_shift": 180.0})
        await session.video_until(lambda f: difference(f[-1], camera) > 40)
    # loaded through the entry point, from the installed copy
    assert Path(sys.modules["camera_fx"].__file__).is_relative_to(site)


async def test_prompt_synth_sound_and_picture_follow_the_prompt(tmp_path, monkeypatch):
    site = install("prompt-synth", tmp_path, monkeypatch)
    features = importlib.import_module("prompt_synth").features
    calm, storm = "a slow warm sunrise", "thunder over a neon city"

    def pitch_is(text: str):
        root = features(text).root_hz
        return lambda audio: abs(dominant_frequency(audio[0]) - root) < 0.02 * root

    parameters = {"prompts": [{"text": calm, "weight": 1.0}], "crossfade": 0.25}
    async with stream_pipeline("prompt-synth", parameters=parameters) as session:
        caps = session.capabilities
        assert caps.produces_audio and caps.produces_video and not caps.accepts_video
        await session.audio_until(pitch_is(calm))
        before = mean_colour(await session.wait_video(6))
        await session.send_parameters({"prompts": [{"text": storm, "weight": 1.0}]})
        await session.audio_until(pitch_is(storm))
        await session.video_until(
            lambda f: np.linalg.norm(mean_colour(f) - before) > 40, frames=6)
    assert Path(sys.modules["prompt_synth"].__file__).is_relative_to(site)


class Flaky(Pipeline):
    """Fine for a few calls, then a bug: what a plugin's test should show at once."""

    pipeline_id = "flaky-tone"
    name = "Flaky tone"
    produces_audio = True
    sample_rate = 48_000
    params = {"calls": ParamSpec("integer", 5, "calls before the bug", 0, 100)}

    def __init__(self, device: str = "cpu"):
        super().__init__(device)
        self._calls = 0

    def __call__(self, inputs, params) -> PipelineOutput:
        self._calls += 1
        if self._calls > params["calls"]:
            raise ZeroDivisionError("the bug")
        return PipelineOutput(audio=np.zeros(4800, np.float32), sample_rate=self.sample_rate)


async def test_a_plugin_failing_mid_stream_is_reported_not_waited_out():
    async with stream_pipeline("flaky-tone", pipelines=[Flaky]) as session:
        with pytest.raises(PipelineFailed, match="flaky-tone: ZeroDivisionError: the bug"):
            await session.wait_audio(5.0, timeout=15.0)
        assert session.failure is not None
