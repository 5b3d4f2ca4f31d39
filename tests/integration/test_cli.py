"""The command line: help texts, configuration errors, and the demo serving its page."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import httpx
import pytest

CLI = [sys.executable, "-m", "scope_relay.cli"]


@pytest.mark.parametrize("command", [[], ["cloud"], ["local"], ["demo"]])
def test_help_explains_flags_and_environment(command):
    out = subprocess.run(CLI + command + ["--help"], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    for variable in ("SCOPE_CLOUD_APP_ID", "SCOPE_CLOUD_WS_URL", "SCOPE_CLOUD_BASE_URL",
                     "SCOPE_CLOUD_API_KEY", "SCOPE_RELAY_ICE_LOOPBACK"):
        assert variable in out
    if command:
        assert "--opus-bitrate" in out and "--video-codec" in out


def test_malformed_app_id_is_a_clear_error():
    env = {**os.environ, "SCOPE_CLOUD_APP_ID": "not-an-app-id"}
    result = subprocess.run(CLI + ["local", "--port", "0"], capture_output=True, text=True,
                            timeout=60, env=env)
    assert result.returncode == 2
    assert "owner/app" in result.stderr


@pytest.mark.parametrize("command", ["cloud", "local", "demo"])
def test_a_bad_video_codec_is_a_clear_error(command):
    result = subprocess.run(CLI + [command, "--video-codec", "av1"], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2
    assert "--video-codec: unknown video codec 'av1': choose one of h264, vp8" in result.stderr


def test_demo_serves_the_page_and_a_ready_cloud():
    env = {**os.environ, "SCOPE_RELAY_ICE_LOOPBACK": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("SCOPE_CLOUD_APP_ID", None)
    env.pop("SCOPE_CLOUD_WS_URL", None)
    proc = subprocess.Popen(CLI + ["demo", "--port", "0"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)
    try:
        url = None
        deadline = time.monotonic() + 60
        while url is None and time.monotonic() < deadline:
            line = proc.stdout.readline()  # blocks until the CLI prints; ends at exit
            if not line:
                break
            match = re.search(r"open the page: (http://\S+)", line)
            url = match.group(1) if match else None
        assert url, "the demo never printed its page URL"
        with httpx.Client(base_url=url, timeout=10) as http:
            assert "scope-relay" in http.get("/").text
            # proxied to the embedded cloud app: answered once its control socket is ready
            ids = {p["id"] for p in http.get("/api/v1/pipelines", timeout=60).json()["pipelines"]}
            assert "av-sync" in ids
            status = http.get("/api/v1/cloud/status").json()
            assert status["state"] == "ready"
            assert status["url"].startswith("ws://127.0.0.1:")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
