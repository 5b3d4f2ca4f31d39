"""A client of the cloud app's control socket (``/ws``, docs/protocol.md): connect, then
``ready`` must be the first message."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from scope_relay.util.serve import Served


async def open_control(http: aiohttp.ClientSession, ws_url: str, *,
                       connect_timeout: float = 30.0, ready_timeout: float = 10.0,
                       **ws_options: Any) -> tuple[aiohttp.ClientWebSocketResponse, dict]:
    """Connect to ``ws_url`` and read the first message, asserted to be ``ready``.
    ``ws_options`` go to ``ws_connect`` (headers, autoping). Returns the socket and the
    ``ready`` message."""
    ws = await asyncio.wait_for(http.ws_connect(ws_url, **ws_options), connect_timeout)
    try:
        ready = await asyncio.wait_for(ws.receive_json(), ready_timeout)
        assert ready["type"] == "ready", f"expected ready first, got {ready}"
    except BaseException:
        await ws.close()
        raise
    return ws, ready


@contextlib.asynccontextmanager
async def control_socket(cloud: Served, **options: Any
                         ) -> AsyncIterator[aiohttp.ClientWebSocketResponse]:
    """A control socket to ``cloud`` past its ``ready``, in a client session of its own;
    both closed afterwards. ``options`` as for :func:`open_control`."""
    async with aiohttp.ClientSession() as http:
        ws, _ = await open_control(http, cloud.ws_url, **options)
        try:
            yield ws
        finally:
            await ws.close()
