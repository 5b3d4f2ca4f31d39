"""The relay's control-socket client: error routing, failing fast, reconnecting."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from servers import cloud_server, serve
from scope_relay.cloud.app import STATE_KEY, CloudConfig, create_app
from scope_relay.local.config import CloudTarget
from scope_relay.local.connection import CloudConnectionManager, CloudError
from scope_relay.protocol.errors import Unavailable


async def test_error_reply_reaches_its_waiter_at_once():
    async with cloud_server() as cloud:
        manager = CloudConnectionManager(CloudTarget(cloud.ws_url), request_timeout=30)
        await manager.start()
        try:
            started = time.monotonic()
            with pytest.raises(CloudError) as failure:
                await manager.request("offer", sdp="garbage", sdp_type="offer")
            assert failure.value.code == "INVALID_SDP"
            assert time.monotonic() - started < 2.0  # not the 30 s request timeout
            status, data = await manager.api("GET", "/api/v1/no/such")
            assert status == 404 and "no/such" in data["detail"]
        finally:
            await manager.close()


async def test_pending_requests_fail_when_the_socket_closes_and_it_reconnects():
    app = create_app(CloudConfig(loopback_ice=True))
    never = asyncio.Event()

    async def slow(body):  # stands in for a model install that takes minutes
        await never.wait()
        return {}

    app[STATE_KEY].router._routes["/api/v1/slow"] = {"GET": slow}
    async with serve(app) as cloud:
        manager = CloudConnectionManager(CloudTarget(cloud.ws_url), request_timeout=30)
        await manager.start()
        try:
            await manager.wait_ready(10)
            first_connection = manager.connection_id
            pending = asyncio.ensure_future(manager.api("GET", "/api/v1/slow"))
            while not manager._pending:  # the request is on the wire
                await asyncio.sleep(0)
            started = time.monotonic()
            await manager._ws.close()  # the connection drops
            with pytest.raises(Unavailable):
                await asyncio.wait_for(pending, 5)
            assert time.monotonic() - started < 2.0  # failed at once, not after 30 s
            await manager.wait_ready(10)  # reconnects, and waits for ready again
            assert manager.connection_id != first_connection and manager.connects == 2
            status, _ = await manager.api("GET", "/health")
            assert status == 200
        finally:
            never.set()
            await manager.close()


async def test_metrics_and_stats_are_served():
    async with cloud_server() as cloud:
        async with httpx.AsyncClient(base_url=cloud.url) as http:
            metrics = (await http.get("/metrics")).text
            assert "scope_cloud_sessions" in metrics and "scope_cloud_connections" in metrics
            stats = (await http.get("/api/v1/stats")).json()
            assert stats["sessions"] == []
