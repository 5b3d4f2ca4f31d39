"""The real command line as separate processes: ``scope-relay cloud`` and ``scope-relay
local`` on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass

CLI = [sys.executable, "-m", "scope_relay.cli"]


@dataclass
class CloudProcess:
    proc: asyncio.subprocess.Process
    ws_url: str
    #: every line the process printed so far (stdout and stderr together)
    output: list[str]

    @property
    def url(self) -> str:
        return "http://" + self.ws_url.removeprefix("ws://").removesuffix("/ws")

    async def wait(self, timeout: float) -> int:
        """The exit status, once the process has ended."""
        return await asyncio.wait_for(self.proc.wait(), timeout)


async def _read_lines(stream: asyncio.StreamReader, into: list[str]) -> None:
    while line := await stream.readline():
        into.append(line.decode(errors="replace").rstrip())


@dataclass
class RelayProcess:
    proc: asyncio.subprocess.Process
    url: str
    #: every line the process printed so far (stdout and stderr together)
    output: list[str]


def _environment(**extra: str) -> dict[str, str]:
    env = {**os.environ, "SCOPE_RELAY_ICE_LOOPBACK": "1", "PYTHONUNBUFFERED": "1", **extra}
    for name in ("SCOPE_CLOUD_API_KEY", "SCOPE_CLOUD_APP_ID", "SCOPE_CLOUD_BASE_URL"):
        if name not in extra:
            env.pop(name, None)
    return env


@contextlib.asynccontextmanager
async def _serving(args: list[str], env: dict[str, str], pattern: str, what: str,
                   start_timeout: float) -> AsyncIterator[tuple[asyncio.subprocess.Process,
                                                            str, list[str]]]:
    """Run the CLI with ``args`` until a line matches ``pattern``; yields the process, the
    match's group 1 and the output so far (kept up to date). Killed afterwards if it has
    not ended by itself, continued first should a test have stopped it."""
    proc = await asyncio.create_subprocess_exec(
        *CLI, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env)
    stdout = proc.stdout
    assert stdout is not None
    output: list[str] = []
    reader = None
    try:
        async def started() -> str:
            while line := await stdout.readline():
                output.append(line.decode(errors="replace").rstrip())
                match = re.search(pattern, output[-1])
                if match:
                    return match.group(1)
            raise AssertionError(f"the {what} ended before serving:\n" + "\n".join(output))

        found = await asyncio.wait_for(started(), start_timeout)
        reader = asyncio.ensure_future(_read_lines(stdout, output))
        yield proc, found, output
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGCONT)  # never leave it stopped, whatever failed
            proc.kill()
            await proc.wait()
        if reader is not None:
            await asyncio.gather(reader, return_exceptions=True)


@contextlib.asynccontextmanager
async def cloud_process(*args: str, start_timeout: float = 60.0) -> AsyncIterator[CloudProcess]:
    """``scope-relay cloud --port 0 --loopback-ice *args``, once it prints its URL; killed
    afterwards if it has not ended by itself."""
    async with _serving(["cloud", "--host", "127.0.0.1", "--port", "0", "--loopback-ice",
                         *args], _environment(), r"cloud app: (ws://\S+)", "cloud app",
                        start_timeout) as (proc, ws_url, output):
        yield CloudProcess(proc, ws_url, output)


@contextlib.asynccontextmanager
async def relay_process(cloud: CloudProcess, *args: str,
                        start_timeout: float = 60.0) -> AsyncIterator[RelayProcess]:
    """``scope-relay local --port 0 --browser-loopback-ice *args`` on ``cloud``, once it
    prints its page's URL; killed afterwards (continued first, should it be stopped)."""
    async with _serving(["local", "--host", "127.0.0.1", "--port", "0",
                         "--browser-loopback-ice", *args],
                        _environment(SCOPE_CLOUD_WS_URL=cloud.ws_url),
                        r"open the page: (http://\S+?)/?$", "relay", start_timeout
                        ) as (proc, url, output):
        yield RelayProcess(proc, url, output)
