"""``scope-relay new-pipeline NAME``: write a ready plugin package for a new pipeline.

The package installs with pip, declares its entry point (so ``scope-relay cloud`` finds it),
holds a working pipeline class with commented parameters, a README, and a test that streams
it through cloud -> relay -> a receiver with :mod:`scope_relay.testing`.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from string import Template

NAME_PATTERN = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")


@dataclass(frozen=True)
class Flags:
    """What the new pipeline makes and takes (``--video``, ``--audio``, ``--camera``)."""

    video: bool
    audio: bool
    camera: bool

    @classmethod
    def from_options(cls, video: bool, audio: bool, camera: bool) -> Flags:
        """With neither ``--video`` nor ``--audio`` the pipeline makes video."""
        return cls(video or not audio, audio, camera)


@dataclass(frozen=True)
class Names:
    pipeline_id: str  #: "my-effect"
    module: str  #: "my_effect"
    cls: str  #: "MyEffect"
    title: str  #: "My effect"

    @classmethod
    def from_name(cls, name: str) -> Names:
        if not NAME_PATTERN.match(name):
            raise ValueError(f"{name!r} is not a usable name: use lowercase letters, digits and "
                             "single hyphens, starting with a letter (e.g. my-effect)")
        words = name.split("-")
        return cls(name, "_".join(words), "".join(w.capitalize() for w in words),
                   " ".join(words).capitalize())


def write_package(name: str, flags: Flags, directory: Path) -> list[Path]:
    """Write the package for pipeline ``name`` into ``directory`` (created; it must not
    exist or be empty). Returns the files written."""
    names = Names.from_name(name)
    if directory.exists() and any(directory.iterdir()):
        raise ValueError(f"{directory} exists and is not empty")
    files = {
        "pyproject.toml": _PYPROJECT,
        "README.md": _README,
        f"{names.module}/__init__.py": _INIT,
        f"{names.module}/pipeline.py": _pipeline_source(flags),
        f"tests/test_{names.module}.py": _test_source(flags),
    }
    values = {"id": names.pipeline_id, "module": names.module, "cls": names.cls,
              "title": names.title, "flags": _flag_words(flags)}
    written = []
    for relative, template in files.items():
        path = directory / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(Template(template).substitute(values), encoding="utf-8")
        written.append(path)
    return written


def _flag_words(flags: Flags) -> str:
    made = " and ".join(w for w, on in (("video", flags.video), ("audio", flags.audio)) if on)
    return made + (" from the camera" if flags.camera else "")


def _pipeline_source(flags: Flags) -> str:
    params = [_P_VIDEO_CAMERA if flags.camera and flags.video else "",
              _P_VIDEO if flags.video and not flags.camera else "",
              _P_AUDIO if flags.audio else ""]
    if flags.camera:
        body = _BODY_CAMERA_START + (_BODY_CAMERA_VIDEO if flags.video else "") + (
            _BODY_CAMERA_AUDIO if flags.audio else "") + _BODY_CAMERA_RETURN[(flags.video,
                                                                               flags.audio)]
    elif flags.video:
        body = _BODY_VIDEO + (_BODY_VIDEO_AUDIO if flags.audio else "") + _BODY_VIDEO_RETURN[
            flags.audio]
    else:
        body = _BODY_AUDIO
    chunk = "" if flags.camera else (
        "    chunk_frames = 12  # frames per call: 0.5 s at 24 fps\n" if flags.video
        else "    chunk_seconds = 0.1  # audio per call: short, so parameter changes land fast\n")
    header = _CLASS_HEAD.replace("$$VIDEO", str(flags.video)).replace(
        "$$AUDIO", str(flags.audio)).replace("$$CAMERA", str(flags.camera)).replace(
        "$$FPS", "30.0" if flags.camera else "24.0")
    head = _PIPELINE_HEAD
    if not (flags.audio or (flags.video and not flags.camera)):
        head = head.replace("import math\n", "")
    return (head + header + chunk + "    params = {\n" + "".join(params) + "    }\n"
            + _INIT_METHOD + body + (_TONE if flags.audio else ""))


def _test_source(flags: Flags) -> str:
    checks = []
    if flags.video:
        checks.append(_T_CAMERA_VIDEO if flags.camera else _T_VIDEO)
    if flags.audio:
        checks.append(_T_AUDIO)
    initial = '"amount": 1.0' if flags.camera and flags.video else ""
    if flags.audio:
        initial = ", ".join(p for p in (initial, '"frequency": 330.0') if p)
    names = ["dominant_frequency"] if flags.audio else []
    imports = ("import numpy as np\n" if flags.video and flags.camera else "") + (
        f"from scope_relay.testing import {', '.join([*names, 'stream_pipeline'])}\n")
    head = _TEST_HEAD.replace("$$INITIAL", initial).replace("$$IMPORTS", imports)
    return head + "".join(checks) + _TEST_TAIL


def add_parser(sub: argparse._SubParsersAction) -> None:
    """The ``new-pipeline`` subcommand."""
    p = sub.add_parser(
        "new-pipeline", help="write a new pipeline plugin package (pyproject, class, README, test)",
        description="Write a ready plugin package for a new pipeline: pip-installable, found "
                    "by the cloud app through its entry point, with a test that streams it "
                    "through cloud -> relay -> a receiver (docs/pipelines.md).")
    p.add_argument("name", help="pipeline id, e.g. my-effect (the package is my_effect)")
    p.add_argument("--video", action="store_true", help="it makes video (the default)")
    p.add_argument("--audio", action="store_true", help="it makes audio")
    p.add_argument("--camera", action="store_true", help="it takes the camera as input")
    p.add_argument("--output", type=Path, default=None, metavar="DIR",
                   help="where to write the package (default ./NAME)")


def run(args: argparse.Namespace) -> int:
    """Write the package; 0 on success, 2 (with the reason on stderr) otherwise."""
    flags = Flags.from_options(args.video, args.audio, args.camera)
    directory = args.output if args.output is not None else Path(args.name)
    try:
        written = write_package(args.name, flags, directory)
    except (ValueError, OSError) as exc:
        print(f"scope-relay new-pipeline: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {len(written)} files to {directory}/ (a pipeline making {_flag_words(flags)}):")
    for path in written:
        print(f"  {path}")
    print(f"next: pip install -e {directory} && pytest {directory}/tests")
    return 0


_PYPROJECT = '''\
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "$id"
version = "0.1.0"
description = "$title: a scope-relay pipeline ($flags)."
readme = "README.md"
requires-python = ">=3.11"
dependencies = ["scope-relay[cloud]"]

[project.optional-dependencies]
test = ["pytest>=8"]

# How the cloud app finds the pipeline once this package is installed next to it.
[project.entry-points."scope_relay.pipelines"]
$id = "$module.pipeline:$cls"

[tool.setuptools]
packages = ["$module"]
'''

_README = '''\
# $id

A [scope-relay](https://github.com/) pipeline making $flags. Replace this line with what it
does, and the code in `$module/pipeline.py` with yours.

## Try it

```sh
pip install -e .        # next to scope-relay[cloud]; registers the entry point
scope-relay demo        # open the page, pick "$title"
# while developing, without installing; edits apply at the next Start:
scope-relay demo --pipeline $module/pipeline.py --reload
```

## Test it

```sh
pip install -e '.[test]'
pytest tests
```

The test streams the pipeline through the real cloud app and relay on 127.0.0.1 to a
receiver (`scope_relay.testing.stream_pipeline`) and checks what a user would notice.

## Parameters

See `params` in `$module/pipeline.py`; every one is live (sent from the page, applied
between calls).
'''

_INIT = '''\
"""$title: a scope-relay pipeline ($flags)."""

from .pipeline import $cls

__all__ = ["$cls"]
'''

_PIPELINE_HEAD = '''\
"""$title: a scope-relay pipeline making $flags.

The runner calls ``__call__`` again and again in a worker thread (under ``torch.no_grad()``),
only when its buffer needs more media. Return a ``PipelineOutput`` (or ``None``: nothing
yet). The guide: docs/pipelines.md in scope-relay.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from scope_relay.cloud.pipelines import InputFrame, ParamSpec, Pipeline, PipelineOutput

'''

_CLASS_HEAD = '''\

class $cls(Pipeline):
    """$title."""

    pipeline_id = "$id"  # clients ask for this id (pipeline_ids)
    name = "$title"  # shown on the page
    # Capability flags: they decide which WebRTC tracks exist on every hop.
    produces_video = $$VIDEO
    produces_audio = $$AUDIO
    accepts_video = $$CAMERA  # True: called only with camera frames to work on
    fps = $$FPS  # frames you return are stamped at this rate (unless you give video_times)
    sample_rate = 48_000  # your audio's rate; any rate works, the cloud resamples to 48 kHz
'''

_P_VIDEO_CAMERA = '''\
        # ParamSpec(kind, default, description, minimum, maximum). Kinds: number, integer,
        # boolean, string, prompts. Values reach __call__ checked and coerced; a change
        # from the page lands before the next call.
        "amount": ParamSpec("number", 0.5, "how far towards the negative, 0..1", 0.0, 1.0),
'''

_P_VIDEO = '''\
        # ParamSpec(kind, default, description, minimum, maximum). Kinds: number, integer,
        # boolean, string, prompts. Values reach __call__ checked and coerced; a change
        # from the page lands before the next call.
        "hue": ParamSpec("number", 0.6, "colour of the waves, 0..1 around the hue circle",
                         0.0, 1.0),
        "speed": ParamSpec("number", 0.5, "waves per second", 0.0, 10.0),
'''

_P_AUDIO = '''\
        "frequency": ParamSpec("number", 220.0, "tone frequency in Hz", 20.0, 5000.0),
        "volume": ParamSpec("number", 0.5, "amplitude, 0..1", 0.0, 1.0),
'''

_INIT_METHOD = '''
    def __init__(self, device: str = "cpu"):
        super().__init__(device)  # self.device: "cuda" on a GPU machine; keep tensors there
        self._frame = 0  # frames made so far: the media clock, in frames
        self._phase = 0.0  # the tone's phase, carried across calls so nothing clicks

    def __call__(self, inputs: Sequence[InputFrame] | None,
                 params: Mapping[str, Any]) -> PipelineOutput | None:
'''

_BODY_CAMERA_START = '''\
        if not inputs:
            return None  # no camera frame yet: the runner waits a moment and asks again
        # camera frames: RGB (H, W, 3) uint8 each, with their media times
        frames = torch.stack([torch.from_numpy(f.rgb) for f in inputs]).to(self.device)
        frames = frames.float() / 255.0  # (T, H, W, 3) in [0, 1]
'''

_BODY_CAMERA_VIDEO = '''\
        amount = float(params["amount"])
        video = frames + amount * (1.0 - 2.0 * frames)  # towards the negative image
'''

_BODY_CAMERA_AUDIO = '''\
        # as much sound as the frames span; louder as the picture gets brighter
        samples = round(len(inputs) * self.sample_rate / self.fps)
        audio = self._tone(samples, params) * (0.5 + frames.mean())
'''

_BODY_CAMERA_RETURN = {
    (True, False): '''\
        self._frame += len(inputs)
        # video_times: keep each frame on its camera frame's media time
        return PipelineOutput(video=video, video_times=[f.media_time for f in inputs])
''',
    (True, True): '''\
        self._frame += len(inputs)
        # video_times: keep each frame on its camera frame's media time; the chunk's audio
        # starts with its first frame
        return PipelineOutput(video=video, audio=audio, sample_rate=self.sample_rate,
                              video_times=[f.media_time for f in inputs])
''',
    (False, True): '''\
        self._frame += len(inputs)
        return PipelineOutput(audio=audio, sample_rate=self.sample_rate)
''',
}

_BODY_VIDEO = '''\
        n, height, width = self.chunk_frames, 240, 320
        t = torch.arange(self._frame, self._frame + n, device=self.device) / self.fps  # (T,)
        x = torch.linspace(0.0, 1.0, width, device=self.device)
        waves = 0.5 + 0.5 * torch.sin(2 * math.pi * (3 * x[None, :] - float(params["speed"])
                                                      * t[:, None]))  # (T, W)
        hue = float(params["hue"]) + torch.tensor([0.0, 1 / 3, 2 / 3], device=self.device)
        colour = 0.5 + 0.5 * torch.cos(2 * math.pi * hue)  # (3,) RGB in [0, 1]
        video = (waves[:, None, :, None] * colour).expand(n, height, width, 3)  # (T, H, W, 3)
'''

_BODY_VIDEO_AUDIO = '''\
        # exactly the chunk's span of audio: it starts with the chunk's first frame
        audio = self._tone(round(n * self.sample_rate / self.fps), params)
'''

_BODY_VIDEO_RETURN = {
    False: '''\
        self._frame += n
        return PipelineOutput(video=video, fps=self.fps)
''',
    True: '''\
        self._frame += n
        return PipelineOutput(video=video, audio=audio, sample_rate=self.sample_rate,
                              fps=self.fps)
''',
}

_BODY_AUDIO = '''\
        audio = self._tone(round(self.chunk_seconds * self.sample_rate), params)
        return PipelineOutput(audio=audio, sample_rate=self.sample_rate)
'''

_TONE = '''
    def _tone(self, samples: int, params: Mapping[str, Any]) -> torch.Tensor:
        """``(1, samples)`` of a sine; its phase runs on from the last call, so neither a
        call boundary nor a frequency change clicks."""
        step = 2 * math.pi * float(params["frequency"]) / self.sample_rate
        phase = self._phase + step * torch.arange(1, samples + 1, device=self.device,
                                                  dtype=torch.float64)
        self._phase = float(phase[-1]) % (2 * math.pi)
        return (float(params["volume"]) * torch.sin(phase)).float()[None, :]
'''

_TEST_HEAD = '''\
"""The pipeline streamed the way a user meets it: the real cloud app and relay on
127.0.0.1, and a receiver that offers like the browser page (scope_relay.testing)."""

import asyncio

$$IMPORTS
from $module import $cls


async def stream_and_check() -> None:
    async with stream_pipeline("$id", pipelines=[$cls],
                               parameters={$$INITIAL}) as session:
'''

_T_CAMERA_VIDEO = '''\
        # the picture that arrives is the camera's, changed by the effect
        frames = await session.wait_video(5)
        camera = session.camera.image.astype(np.int16)
        assert frames[-1].shape == camera.shape
        assert np.abs(frames[-1].astype(np.int16) - camera).mean() > 40
        # a live change comes through: amount 0 gives the camera back
        await session.send_parameters({"amount": 0.0})
        await session.video_until(
            lambda f: np.abs(f[-1].astype(np.int16) - camera).mean() < 20)
'''

_T_VIDEO = '''\
        # frames arrive and are not black
        frames = await session.wait_video(5)
        assert frames[-1].mean() > 10
'''

_T_AUDIO = '''\
        # the tone arrives at its frequency, and follows a live change
        await session.audio_until(lambda a: abs(dominant_frequency(a[0]) - 330) < 5)
        await session.send_parameters({"frequency": 550.0})
        await session.audio_until(lambda a: abs(dominant_frequency(a[0]) - 550) < 5)
'''

_TEST_TAIL = '''

def test_streams_through_cloud_and_relay() -> None:
    asyncio.run(stream_and_check())
'''
