"""Pipeline discovery, validation, --reload and load progress, without sockets: real plugin
files in a temporary folder, the real registry and manager."""

from __future__ import annotations

import asyncio
import logging
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from scope_relay.cloud.builtin_pipelines import signals as builtin
from scope_relay.cloud.builtin_pipelines.signals import BUILTIN_PIPELINES
from scope_relay.cloud.hosting.discovery import (
    ENV_VAR,
    discover_pipelines,
    parse_spec,
    validate_pipeline,
)
from scope_relay.cloud.hosting.manager import LoadProgressRecorder, PipelineManager, resolve_device
from scope_relay.cloud.hosting.registry import PipelineRegistry
from scope_relay.cloud.hosting.reload import PluginReloader

from helpers.plugins import tone_plugin

HELPER = '''

class Helper(Pipeline):  # no pipeline_id: a base for others, skipped when collecting all
    produces_audio = True
'''


def good_plugin(frequency: float, tag: str) -> str:
    """``Good`` (the test tone at ``frequency``, id ``good-<tag>``) and a base class."""
    return tone_plugin("Good", f"good-{tag}", "Good", frequency, more=HELPER)


BROKEN = '''
from scope_relay.cloud.pipelines import ParamSpec, Pipeline


class NoId(Pipeline):
    produces_audio = True


class BadFlags(Pipeline):
    pipeline_id = "bad-flags"
    produces_video = "yes"


class Silent(Pipeline):
    pipeline_id = "silent"


class BadParams(Pipeline):
    pipeline_id = "bad-params"
    produces_audio = True
    params = {"gain": 1.0}


class Dup(Pipeline):
    pipeline_id = "test-tone"
    produces_audio = True


NOT_A_CLASS = 3
'''


def write(path: Path, text: str) -> str:
    path.write_text(textwrap.dedent(text))
    return str(path)


@pytest.fixture
def plugin_dir(tmp_path, monkeypatch):
    """A folder on ``sys.path`` for plugin modules; the modules are forgotten afterwards."""
    monkeypatch.syspath_prepend(str(tmp_path))
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        if name.startswith(("_scope_relay_plugin_", "plug_")):
            del sys.modules[name]


def test_builtins_register_through_entry_points_in_their_usual_order():
    found = discover_pipelines(env={})
    assert found.failures == []
    assert found.pipelines == list(BUILTIN_PIPELINES)
    assert all(o.source.startswith("entry point ") and o.builtin for o in found.origins.values())


def test_broken_plugins_fail_one_by_one_and_the_rest_load(plugin_dir):
    good = write(plugin_dir / "good.py", good_plugin(700.0, "file"))
    write(plugin_dir / "plug_broken.py", BROKEN)
    write(plugin_dir / "plug_good.py", good_plugin(800.0, "module"))
    extra = [f"{good}", "plug_missing:Nope", "plug_broken:NoId", "plug_broken:BadFlags",
             "plug_broken:Silent", "plug_broken:BadParams", "plug_broken:Dup",
             "plug_broken:NOT_A_CLASS", "plug_broken:Absent"]
    found = discover_pipelines(extra, env={ENV_VAR: " plug_good:Good , "})
    ids = [c.pipeline_id for c in found.pipelines]
    assert ids == [c.pipeline_id for c in BUILTIN_PIPELINES] + ["good-file", "good-module"]
    errors = {f.source: f.error for f in found.failures}
    assert list(errors) == [f"--pipeline {s}" for s in extra[1:]]
    assert "ModuleNotFoundError" in errors["--pipeline plug_missing:Nope"]
    assert "no pipeline_id" in errors["--pipeline plug_broken:NoId"]
    assert "produces_video must be True or False" in errors["--pipeline plug_broken:BadFlags"]
    assert "neither video nor audio" in errors["--pipeline plug_broken:Silent"]
    assert "must be a ParamSpec" in errors["--pipeline plug_broken:BadParams"]
    dup = errors["--pipeline plug_broken:Dup"]  # the first wins; both sources are named
    assert "duplicate pipeline id 'test-tone'" in dup and "scope_relay.cloud.builtin_pipelines.signals" in dup
    assert "not a Pipeline subclass" in errors["--pipeline plug_broken:NOT_A_CLASS"]
    assert "no attribute 'Absent'" in errors["--pipeline plug_broken:Absent"]
    registry = PipelineRegistry.from_discovery(found)
    assert [f["source"] for f in registry.describe_failures()] == list(errors)
    assert registry.capabilities(["good-file"]).produces_audio


def test_a_syntax_error_is_one_line_naming_file_and_line(plugin_dir):
    path = write(plugin_dir / "typo.py", "class X(:\n")
    found = discover_pipelines([path], env={})
    (failure,) = found.failures
    assert failure.error.startswith("SyntaxError:") and f"{path}, line 1" in failure.error


def test_spec_forms():
    assert parse_spec("pkg.mod:Cls") == ("pkg.mod", "Cls", False)
    assert parse_spec("pkg.mod") == ("pkg.mod", None, False)
    target, attr, is_file = parse_spec("./x/tone.py:Tone")
    assert target.endswith("/x/tone.py") and Path(target).is_absolute()
    assert (attr, is_file) == ("Tone", True)
    assert parse_spec("tone.py")[1:] == (None, True)


def test_validation_accepts_every_builtin():
    assert [validate_pipeline(c) for c in BUILTIN_PIPELINES] == [None] * len(BUILTIN_PIPELINES)
    assert "not a Pipeline subclass" in (validate_pipeline(int) or "")


def test_devices():
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") in ("cpu", "cuda")
    with pytest.raises(ValueError, match="auto, cpu, cuda or cuda:N"):
        resolve_device("tpu")
    with pytest.raises(ValueError, match="device number"):
        resolve_device("cuda:x")
    with pytest.raises(ValueError, match="CUDA"):
        resolve_device("cuda:99")


def test_reload_takes_new_code_and_keeps_the_old_on_a_syntax_error(plugin_dir, caplog):
    path = plugin_dir / "tone.py"
    write(path, good_plugin(700.0, "r"))
    found = discover_pipelines([str(path)], env={})
    registry = PipelineRegistry.from_discovery(found)
    reloader = PluginReloader(found.origins)
    assert reloader.files == [str(path)]
    first = registry.get("good-r")
    assert reloader.check().classes == {}  # nothing changed

    write(path, good_plugin(900.0, "r"))
    with caplog.at_level(logging.INFO):
        registry.apply_reload(reloader.check())
    second = registry.get("good-r")
    assert second is not first and sys.modules[second.__module__].FREQUENCY == 900.0
    assert f"reloaded pipeline good-r from {path}" in caplog.text

    path.write_text(path.read_text() + "\ndef broken(:\n")
    caplog.clear()
    with caplog.at_level(logging.INFO):
        registry.apply_reload(reloader.check())
    assert registry.get("good-r") is second
    assert "kept the old code" in caplog.text and "SyntaxError" in caplog.text
    (failure,) = registry.failures
    assert "SyntaxError" in failure.error and "kept the old code" in failure.error

    write(path, good_plugin(1000.0, "r"))  # fixed: the failure goes
    registry.apply_reload(reloader.check())
    assert registry.failures == [] and registry.get("good-r") not in (first, second)


def test_progress_is_clamped_and_spread_over_a_chain():
    recorder = LoadProgressRecorder(2)
    assert recorder.snapshot()["phase"] == "starting"
    recorder.for_stage(1, "b")("weights", 0.5)
    snap = recorder.snapshot()
    assert snap["phase"] == "b: weights" and snap["fraction"] == 0.75 and snap["elapsed"] >= 0
    recorder.for_stage(0, "a")("warm-up", 7)
    assert recorder.snapshot()["fraction"] == 0.5
    recorder.for_stage(0, "a")("warm-up", float("nan"))
    assert recorder.snapshot()["fraction"] is None


class Loading(builtin.TestTone):
    """Reports progress, then waits for the test before finishing its load."""

    pipeline_id = "loading"
    gate = threading.Event()
    reported = threading.Event()
    loads = 0

    def load(self, progress) -> None:
        type(self).loads += 1
        progress("weights", 0.25)
        self.reported.set()
        if not self.gate.wait(10):
            raise TimeoutError("gate never opened")


async def test_manager_reports_progress_then_device_and_loads_each_instance():
    Loading.gate.clear()
    Loading.reported.clear()
    Loading.loads = 0
    manager = PipelineManager(PipelineRegistry([*BUILTIN_PIPELINES, Loading]), "cpu")
    task = asyncio.ensure_future(manager.load(["test-tone", "loading"]))
    try:
        await asyncio.to_thread(Loading.reported.wait, 10)
        status = manager.status()
        assert status["status"] == "loading" and status["device"] == "cpu"
        assert status["progress"]["phase"] == "loading: weights"
        assert status["progress"]["fraction"] == pytest.approx(0.625)
        Loading.gate.set()
        assert (await task).status == "loaded"
        assert "progress" not in manager.status()
        chain = await asyncio.to_thread(manager.instantiate, ["loading"])
        assert isinstance(chain[0], Loading) and Loading.loads == 2  # a session's own, loaded
    finally:
        Loading.gate.set()
        await asyncio.gather(task, return_exceptions=True)
        await manager.close()


def test_reload_picks_up_a_plugin_that_failed_at_start_once_fixed(plugin_dir):
    path = plugin_dir / "late.py"
    write(path, "class Late(:\n")
    found = discover_pipelines([f"{path}:Good"], env={})
    registry = PipelineRegistry.from_discovery(found)
    reloader = PluginReloader(found.origins, found.unloaded)
    assert reloader.files == [str(path)] and len(registry.failures) == 1

    write(path, good_plugin(300.0, "late"))
    registry.apply_reload(reloader.check())
    assert registry.failures == [] and "good-late" in registry.ids()
