"""Bring your own model: a plugin installed as a real distribution (entry points) next to
broken ones, and ``--reload`` of a plugin file named by ``SCOPE_RELAY_PIPELINES``, each
heard through cloud -> relay -> receiver."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from scope_relay.cloud.hosting.discovery import ENV_VAR

from helpers.peers import beep_frequencies, connected
from helpers.plugins import tone_plugin
from helpers.servers import cloud_server, relay_server

PIP = [sys.executable, "-m", "pip"]
#: beeps long enough (>= 100 ms) for beep_frequencies, often enough for a short test
BEEPS = {"interval": 0.5, "duration": 0.3}

PYPROJECT = """
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "scope-relay-test-plugin"
version = "0.1.0"

[project.entry-points."scope_relay.pipelines"]
plugin-tone = "relay_test_plugin:PluginTone"
broken-import = "relay_test_plugin_missing:Nope"
broken-flags = "relay_test_plugin:BadFlags"

[tool.setuptools]
py-modules = ["relay_test_plugin"]
"""

BAD_FLAGS = """

class BadFlags(Pipeline):
    pipeline_id = "bad-flags"
    produces_audio = 1
"""

@pytest.fixture
def installed_plugin(tmp_path, monkeypatch) -> Iterator[Path]:
    """The plugin built and installed with pip into a folder of its own, put on sys.path
    (so importlib.metadata sees its dist-info and entry points); forgotten afterwards."""
    source = tmp_path / "src"
    source.mkdir()
    (source / "pyproject.toml").write_text(PYPROJECT)
    (source / "relay_test_plugin.py").write_text(
        tone_plugin("PluginTone", "plugin-tone", "Plugin tone", 660.0, more=BAD_FLAGS))
    site = tmp_path / "site"
    done = subprocess.run([*PIP, "install", "-q", "--no-deps", "--no-build-isolation",
                           "--no-index", "--target", str(site), str(source)],
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    assert list(site.glob("scope_relay_test_plugin-0.1.0.dist-info"))
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delenv(ENV_VAR, raising=False)
    yield site
    sys.modules.pop("relay_test_plugin", None)


async def hear(relay_url: str, pipeline_id: str) -> list[float]:
    """The beep frequencies a receiver hears from ``pipeline_id`` through the relay."""
    async with connected(relay_url, {"pipeline_ids": [pipeline_id], **BEEPS}, video=False) as peer:
        await peer.wait_audio_frames(60)
        return beep_frequencies(peer.received.audio)


async def test_an_installed_plugin_streams_and_broken_ones_are_listed(installed_plugin):
    async with cloud_server() as cloud, relay_server(cloud) as relay:
        async with httpx.AsyncClient(timeout=30) as http:
            listing = (await http.get(f"{relay.url}/api/v1/pipelines")).json()
        ids = [p["id"] for p in listing["pipelines"]]
        assert ids[:5] == ["colour-field", "passthrough", "test-tone", "av-sync", "bursty-av"]
        assert "plugin-tone" in ids and "bad-flags" not in ids
        failed = {f["source"].split(" = ")[0]: f["error"] for f in listing["failed"]}
        assert set(failed) == {"entry point broken-import", "entry point broken-flags"}
        assert "ModuleNotFoundError" in failed["entry point broken-import"]
        assert "produces_audio must be True or False" in failed["entry point broken-flags"]
        assert all("scope-relay-test-plugin" in f["source"] for f in listing["failed"])

        beeps = await hear(relay.url, "plugin-tone")
        assert beeps and beeps[0] == pytest.approx(660, rel=0.01)


async def test_reload_uses_edited_code_at_the_next_session(tmp_path, monkeypatch, caplog):
    plugin = tmp_path / "tone_plugin.py"

    def write(frequency: float, tail: str = "") -> None:
        plugin.write_text(tone_plugin("PluginTone", "reload-tone", "Plugin tone", frequency,
                                      more=BAD_FLAGS) + tail)

    write(500.0)
    monkeypatch.setenv(ENV_VAR, f"{plugin}:PluginTone")
    caplog.set_level(logging.INFO, logger="scope_relay.cloud")
    async with cloud_server(reload=True) as cloud, relay_server(cloud) as relay:
        beeps = await hear(relay.url, "reload-tone")
        assert beeps and beeps[0] == pytest.approx(500, rel=0.01)

        write(800.0)
        beeps = await hear(relay.url, "reload-tone")
        assert beeps and beeps[0] == pytest.approx(800, rel=0.01)
        assert f"reloaded pipeline reload-tone from {plugin}" in caplog.text

        caplog.clear()
        write(1200.0, "\ndef broken(:\n")
        beeps = await hear(relay.url, "reload-tone")
        assert beeps and beeps[0] == pytest.approx(800, rel=0.01)  # the old code plays on
        assert "kept the old code" in caplog.text and "SyntaxError" in caplog.text
        async with httpx.AsyncClient(timeout=30) as http:
            failed = (await http.get(f"{cloud.url}/api/v1/pipelines")).json()["failed"]
        assert [f["source"] for f in failed] == [f"{ENV_VAR} {plugin}:PluginTone"]
        assert "SyntaxError" in failed[0]["error"]
