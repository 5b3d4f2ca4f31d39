"""``scope-relay new-pipeline``: what it writes installs with pip, declares its entry point,
and its own test passes (run by pytest in a subprocess, as the plugin's author would)."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

import pytest

from scope_relay.cli.new_pipeline import Flags, write_package

FLAG_SETS = [(), ("--audio",), ("--video", "--audio"), ("--camera",), ("--camera", "--audio"),
             ("--camera", "--video", "--audio")]


def new_pipeline(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "scope_relay.cli", "new-pipeline", *args],
                          cwd=cwd, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("flags", FLAG_SETS, ids=lambda f: "-".join(f) or "default")
def test_every_variant_is_valid_python(tmp_path, flags):
    options = {name: f"--{name}" in flags for name in ("video", "audio", "camera")}
    for path in write_package("my-piece", Flags.from_options(**options), tmp_path / "pkg"):
        if path.suffix == ".py":
            compile(path.read_text(), str(path), "exec")


def test_refuses_a_bad_name_and_a_used_folder(tmp_path):
    bad = new_pipeline("My_Piece", cwd=tmp_path)
    assert bad.returncode == 2 and "not a usable name" in bad.stderr
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("mine")
    used = new_pipeline("taken", cwd=tmp_path)
    assert used.returncode == 2 and "not empty" in used.stderr
    assert (tmp_path / "taken" / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize("flags", [("--audio",), ("--camera", "--video", "--audio")],
                         ids=["audio", "camera-video-audio"])
def test_generated_package_installs_and_its_test_passes(tmp_path, flags):
    made = new_pipeline("stage-piece", *flags, cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    package, site, elsewhere = tmp_path / "stage-piece", tmp_path / "site", tmp_path / "run"
    elsewhere.mkdir()
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                    "--no-build-isolation", "--target", str(site), str(package)],
                   check=True, timeout=120, capture_output=True)
    (entry,) = [ep for dist in importlib.metadata.distributions(path=[str(site)])
                for ep in dist.entry_points if ep.group == "scope_relay.pipelines"]
    assert (entry.name, entry.value) == ("stage-piece", "stage_piece.pipeline:StagePiece")
    # run from an empty folder, so the installed copy is the one imported, not the source
    env = os.environ | {"PYTHONPATH": str(site), "SCOPE_RELAY_ICE_LOOPBACK": "1"}
    check = ("import stage_piece, pathlib; "
             f"assert pathlib.Path(stage_piece.__file__).is_relative_to({str(site)!r})")
    subprocess.run([sys.executable, "-c", check], cwd=elsewhere, env=env, check=True, timeout=60)
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          str(package / "tests")], cwd=elsewhere, env=env,
                         capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "1 passed" in run.stdout
