"""Start the real cloud app and the real relay on 127.0.0.1 with free ports."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from scope_relay.cloud.app import CloudConfig, create_app
from scope_relay.local.cloud_link.target import CloudTarget
from scope_relay.local.server import RelayConfig, create_relay_app
from scope_relay.util.serve import Served, serve

__all__ = ["Served", "cloud_server", "relay_server", "serve"]

#: Tests close their clients first; a handler still running after this long is cut off.
SHUTDOWN_TIMEOUT = 1.0


@contextlib.asynccontextmanager
async def cloud_server(*, port: int = 0, **config: Any) -> AsyncIterator[Served]:
    """The cloud app with ``CloudConfig(**config)`` (loopback ICE unless told otherwise).
    ``port`` 0: a free one; a given port lets a test restart the app where it was."""
    config.setdefault("loopback_ice", True)
    app = create_app(CloudConfig(**config))
    async with serve(app, port=port, shutdown_timeout=SHUTDOWN_TIMEOUT) as served:
        yield served


@contextlib.asynccontextmanager
async def relay_server(cloud: Served, **config: Any) -> AsyncIterator[Served]:
    """The relay, its cloud target ``cloud``'s control socket."""
    config.setdefault("loopback_ice", True)
    app = create_relay_app(RelayConfig(CloudTarget(cloud.ws_url), **config))
    async with serve(app, shutdown_timeout=SHUTDOWN_TIMEOUT) as served:
        yield served
