"""``deploy/fal/app.py --local``: the fal bridge and the cloud app it starts, as real processes."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass

from .process_group import ROOT, Process, running

APP = ROOT / "deploy" / "fal" / "app.py"


@dataclass
class LocalBridge:
    process: Process
    ws_url: str  # the bridge's /ws
    cloud_ws_url: str  # the cloud app behind it, reached directly

    @property
    def url(self) -> str:
        return self.ws_url.replace("ws://", "http://", 1).removesuffix("/ws")

    @property
    def cloud_url(self) -> str:
        return self.cloud_ws_url.replace("ws://", "http://", 1).removesuffix("/ws")


@contextlib.contextmanager
def local_fal_bridge(api_key: str | None = None, start_timeout: float = 120.0) -> Iterator[LocalBridge]:
    """The bridge on a free port, its cloud app on loopback ICE (and ``api_key``), once both
    serve. Stopped with SIGTERM at the end: the cloud app drains and the bridge must exit 0."""
    env = {**os.environ, "SCOPE_RELAY_ICE_LOOPBACK": "1", "PYTHONUNBUFFERED": "1"}
    for name in ("SCOPE_CLOUD_API_KEY", "SCOPE_CLOUD_ARGS", "SCOPE_CLOUD_LOOPBACK_ICE"):
        env.pop(name, None)
    if api_key:
        env["SCOPE_CLOUD_API_KEY"] = api_key
    with running([sys.executable, str(APP), "--local", "--port", "0"], env) as process:
        ws_url = process.wait_for(r"fal bridge: (ws://\S+)", start_timeout).group(1)
        cloud_ws_url = process.wait_for(r"cloud app: (ws://\S+)", 1).group(1)
        yield LocalBridge(process, ws_url, cloud_ws_url)
        assert process.stop() == 0, process.output_tail()
        process.wait_for(r"drained: 0 sessions cut off", 1)  # SIGTERM reached the cloud app
