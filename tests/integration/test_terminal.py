"""The terminal a person reads: ``--cloud`` on ``scope-relay local``, the page URL at once
with what to do when no cloud answers, outage warnings at a readable pace, port hints that
never send one side onto the other's default, and a cloud crash called what it is."""

from __future__ import annotations

import asyncio
import errno
import re
import signal
import socket
import subprocess
from types import SimpleNamespace

import httpx

from scope_relay.cli.main import DEFAULT_CLOUD_PORT, DEFAULT_RELAY_PORT, _port_in_use

from helpers.processes import CLI, _environment, _serving, cloud_process
from helpers.waiting import wait_until

PAGE_URL = r"open the page: (http://\S+?)/?$"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_local_help_shows_the_cloud_flag():
    out = subprocess.run(CLI + ["local", "--help"], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    flag = out[out.index("\n  --cloud URL|OWNER/APP"):]  # its entry, not the usage line
    assert "SCOPE_CLOUD_WS_URL" in flag[:600] and "SCOPE_CLOUD_APP_ID" in flag[:600]


def test_a_malformed_cloud_flag_is_a_clear_error():
    result = subprocess.run(CLI + ["local", "--port", "0", "--cloud", "http://example.com"],
                            capture_output=True, text=True, timeout=60, env=_environment())
    assert result.returncode == 2
    assert "--cloud must be a ws:// or wss:// URL or owner/app" in result.stderr


async def test_with_no_cloud_the_url_comes_at_once_with_what_to_do():
    url = f"ws://127.0.0.1:{free_port()}/ws"  # nothing listens there
    async with _serving(["local", "--host", "127.0.0.1", "--port", "0", "--cloud", url],
                        _environment(), PAGE_URL, "relay", 60) as (proc, page, output):
        hint = next(line for line in output if "no cloud app answers" in line)
        assert url in hint
        for step in ("`scope-relay cloud`", "`scope-relay demo`", "--cloud URL"):
            assert step in hint
        async with httpx.AsyncClient(timeout=10) as http:
            assert "scope-relay" in (await http.get(page)).text  # served meanwhile
        # the outage is repeated after 10 s, not once per attempt (~1 a second)
        await wait_until(lambda: any("still no cloud" in line for line in output), timeout=30)
        warned = [line for line in output if "cloud" in line and "WARNING" in line]
        assert len(warned) == 2, "\n".join(output)
        attempts = int(re.search(r"\((\d+) attempts\)", warned[-1]).group(1))
        assert attempts >= 5  # it kept trying: the pace is in the reports only


async def test_the_cloud_flag_points_the_relay_at_a_cloud_and_a_crash_is_called_so():
    async with cloud_process() as cloud:
        async with _serving(["local", "--host", "127.0.0.1", "--port", "0",
                             "--browser-loopback-ice", "--cloud", cloud.ws_url],
                            _environment(), PAGE_URL, "relay", 60) as (proc, page, output):
            assert not any("no cloud app answers" in line for line in output)
            async with httpx.AsyncClient(base_url=page, timeout=10) as http:
                status = (await http.get("/api/v1/cloud/status")).json()
            assert status["state"] == "ready" and status["url"] == cloud.ws_url
            cloud.proc.send_signal(signal.SIGKILL)
            await cloud.wait(10)
            await wait_until(lambda: any("connection was lost" in line for line in output),
                             timeout=20)
            text = "\n".join(output)
            assert "the cloud app exited" in text
            assert "ended this session" not in text


def test_busy_port_hints_never_name_the_other_sides_default():
    busy = OSError(errno.EADDRINUSE, "error while attempting to bind on address "
                   "('127.0.0.1', 7999): address already in use")
    line = _port_in_use(busy, SimpleNamespace(port=7999, host="127.0.0.1"))
    assert line is not None
    suggested = [int(p) for p in re.findall(r"--port (\d+)", line)]
    assert suggested and not {DEFAULT_RELAY_PORT, DEFAULT_CLOUD_PORT} & set(suggested), line
    assert "--port 0" in line


async def test_a_busy_relay_port_suggests_a_free_one():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = await asyncio.create_subprocess_exec(
            *CLI, "demo", "--port", str(port), stderr=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.DEVNULL, env=_environment())
        _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 1
    line = err.decode().strip().splitlines()[-1]
    hint = re.search(rf"port {port} is in use; try --port (\d+) \(free now\)", line)
    assert hint, line
    with socket.socket() as check:
        check.bind(("127.0.0.1", int(hint.group(1))))
