"""The real command line as a separate process: ``scope-relay cloud`` on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
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


@contextlib.asynccontextmanager
async def cloud_process(*args: str, start_timeout: float = 60.0) -> AsyncIterator[CloudProcess]:
    """``scope-relay cloud --port 0 --loopback-ice *args``, once it prints its URL; killed
    afterwards if it has not ended by itself."""
    env = {**os.environ, "SCOPE_RELAY_ICE_LOOPBACK": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("SCOPE_CLOUD_API_KEY", None)
    proc = await asyncio.create_subprocess_exec(
        *CLI, "cloud", "--host", "127.0.0.1", "--port", "0", "--loopback-ice", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env)
    assert proc.stdout is not None
    output: list[str] = []
    reader = None
    try:
        async def started() -> str:
            while line := await proc.stdout.readline():  # type: ignore[union-attr]
                output.append(line.decode(errors="replace").rstrip())
                match = re.search(r"cloud app: (ws://\S+)", output[-1])
                if match:
                    return match.group(1)
            raise AssertionError("the cloud app ended before serving:\n" + "\n".join(output))

        ws_url = await asyncio.wait_for(started(), start_timeout)
        reader = asyncio.ensure_future(_read_lines(proc.stdout, output))
        yield CloudProcess(proc, ws_url, output)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        if reader is not None:
            await asyncio.gather(reader, return_exceptions=True)
