"""scripts/e2e.sh, the preview workflow's end-to-end check, passes against the local cloud
app and against the local fal bridge: the workflow runs the code this suite proves.

One bridge process serves both targets: its cloud app (``scope-relay cloud`` on loopback)
is the "local cloud app", reached directly, and the bridge is the local fal deployment."""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import subprocess
from collections.abc import Iterator
from types import ModuleType

import pytest

from helpers.fal_bridge import LocalBridge, local_fal_bridge
from helpers.process_group import ROOT

SCRIPT = ROOT / "scripts" / "e2e.sh"
KEY = "e2e-test-key"


@pytest.fixture(scope="module")
def bridge() -> Iterator[LocalBridge]:
    with local_fal_bridge(KEY) as bridge:
        yield bridge


def run_e2e(app_id: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SCOPE_CLOUD_APP_ID": app_id, "SCOPE_CLOUD_API_KEY": KEY,
           "SCOPE_RELAY_ICE_LOOPBACK": "1"}  # (a local target; a hosted one needs no loopback)
    for name in ("SCOPE_CLOUD_WS_URL", "SCOPE_CLOUD_BASE_URL"):
        env.pop(name, None)
    return subprocess.run([str(SCRIPT), "--timeout", "60", *args], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=180)


@pytest.mark.parametrize("via", ["cloud-app", "fal-bridge"])
def test_e2e_script_passes(bridge, via):
    target = bridge.cloud_ws_url if via == "cloud-app" else bridge.ws_url
    result = run_e2e(target)
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert f"e2e: target {target} (with an API key)" in out
    assert "flags: test-tone: produces_audio=True produces_video=False" in out
    assert "flags: av-sync: produces_audio=True produces_video=True" in out
    assert "tracks: test-tone: answer {'video': 'inactive', 'audio': 'sendonly'}" in out
    assert "tracks: av-sync: answer {'video': 'sendonly', 'audio': 'sendonly'}" in out
    assert re.search(r"tone: worst error \d+\.\d\d % \(limit 1 %\)", out), out
    assert re.search(r"lip sync: click minus flash .* ms; worst \d+\.\d ms \(limit 40 ms\)", out), out
    assert out.rstrip().splitlines()[-1].startswith("e2e: PASS")


@pytest.fixture(scope="module")
def e2e_check() -> ModuleType:
    """scripts/e2e_check.py (what e2e.sh runs), imported here for the cheap cases."""
    spec = importlib.util.spec_from_file_location("e2e_check", ROOT / "scripts" / "e2e_check.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def test_e2e_check_fails_when_the_media_is_wrong(bridge, e2e_check, monkeypatch, capsys):
    """test-tone refuses 20 kHz (its range ends at 11 kHz) and keeps beeping at 440 Hz."""
    monkeypatch.setenv("SCOPE_CLOUD_APP_ID", bridge.ws_url)
    monkeypatch.setenv("SCOPE_CLOUD_API_KEY", KEY)
    monkeypatch.delenv("SCOPE_CLOUD_WS_URL", raising=False)
    args = argparse.Namespace(frequency=20000.0, max_lip_sync_ms=40.0, timeout=60.0)
    assert await e2e_check.run(args) == 1
    assert "e2e: FAIL: tone: a beep is" in capsys.readouterr().out


def test_e2e_check_needs_a_target(e2e_check, monkeypatch, capsys):
    for name in ("SCOPE_CLOUD_APP_ID", "SCOPE_CLOUD_WS_URL"):
        monkeypatch.delenv(name, raising=False)
    assert e2e_check.main([]) == 2
    assert "set SCOPE_CLOUD_APP_ID" in capsys.readouterr().err
