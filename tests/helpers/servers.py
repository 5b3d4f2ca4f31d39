"""Start the real cloud app and the real relay on 127.0.0.1 with free ports."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from aiohttp import web

from scope_relay.cloud.app import CloudConfig, create_app
from scope_relay.local.cloud_target import CloudTarget
from scope_relay.local.server import RelayConfig, create_relay_app


@dataclass
class Served:
    url: str
    app: web.Application

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://") + "/ws"


@contextlib.asynccontextmanager
async def serve(app: web.Application, port: int = 0) -> AsyncIterator[Served]:
    """``port`` 0: a free one; a given port lets a test restart a server where it was."""
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    try:
        yield Served(f"http://127.0.0.1:{port}", app)
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def cloud_server(**config) -> AsyncIterator[Served]:
    config.setdefault("loopback_ice", True)
    async with serve(create_app(CloudConfig(**config))) as served:
        yield served


@contextlib.asynccontextmanager
async def relay_server(cloud: Served, **config) -> AsyncIterator[Served]:
    config.setdefault("loopback_ice", True)
    async with serve(create_relay_app(RelayConfig(CloudTarget(cloud.ws_url), **config))) as served:
        yield served
