"""The relay's control-socket client: error routing, failing fast, reconnecting."""

from __future__ import annotations

import asyncio
import logging
import time

import httpx
import pytest

from scope_relay.cloud.app import STATE_KEY
from scope_relay.local.cloud_link.control_socket import CloudConnectionManager, CloudError
from scope_relay.local.cloud_link.target import CloudTarget
from scope_relay.protocol import messages as m
from scope_relay.protocol.errors import Unavailable

from helpers.servers import cloud_server


async def test_error_reply_reaches_its_waiter_at_once():
    async with cloud_server() as cloud:
        manager = CloudConnectionManager(CloudTarget(cloud.ws_url), request_timeout=30)
        await manager.start()
        try:
            started = time.monotonic()
            with pytest.raises(CloudError) as failure:
                await manager.request(m.Offer(None, "garbage"))
            assert failure.value.code == "INVALID_SDP"
            assert time.monotonic() - started < 2.0  # not the 30 s request timeout
            status, data = await manager.api("GET", "/api/v1/no/such")
            assert status == 404 and "no/such" in data["detail"]
        finally:
            await manager.close()


async def test_pending_requests_fail_when_the_socket_closes_and_it_reconnects():
    never = asyncio.Event()

    async def slow(body):  # stands in for a model install that takes minutes
        await never.wait()
        return {}

    async with cloud_server() as cloud:
        state = cloud.app[STATE_KEY]
        state.router.add_route("/api/v1/slow", "GET", slow)
        manager = CloudConnectionManager(CloudTarget(cloud.ws_url), request_timeout=30)
        await manager.start()
        try:
            await manager.wait_ready(10)
            first_connection = manager.connection_id
            pending = asyncio.ensure_future(manager.api("GET", "/api/v1/slow"))
            while not manager.pending_requests:  # the request is on the wire
                await asyncio.sleep(0)
            started = time.monotonic()
            for channel in list(state.control_channels):  # the connection drops
                await channel.close(1001, "test")
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


async def test_cloud_logs_are_re_emitted_locally_once(caplog):
    async with cloud_server(log_interval=0.05) as cloud:
        manager = CloudConnectionManager(CloudTarget(cloud.ws_url))
        await manager.start()
        try:
            await manager.wait_ready(10)
            seen, second = asyncio.Event(), asyncio.Event()

            class Watch(logging.Handler):
                def emit(self, record):
                    if "disk almost full" in record.getMessage():
                        seen.set()
                    if "second marker" in record.getMessage():
                        second.set()

            watch = Watch()
            logging.getLogger("scope_cloud").addHandler(watch)
            try:
                with caplog.at_level(logging.INFO):
                    logging.getLogger("scope_relay.cloud.pipelines").warning("disk almost full")
                    await asyncio.wait_for(seen.wait(), 5)
                    # an echo would be forwarded in a later batch, before this marker
                    logging.getLogger("scope_relay.cloud.pipelines").info("second marker")
                    await asyncio.wait_for(second.wait(), 5)
            finally:
                logging.getLogger("scope_cloud").removeHandler(watch)
            relayed = [r for r in caplog.records
                       if r.name == "scope_cloud" and "disk almost full" in r.getMessage()]
            assert len(relayed) == 1 and relayed[0].levelno == logging.WARNING
        finally:
            await manager.close()


async def test_metrics_and_stats_are_served():
    async with cloud_server() as cloud:
        async with httpx.AsyncClient(base_url=cloud.url) as http:
            metrics = (await http.get("/metrics")).text
            assert "scope_cloud_sessions" in metrics and "scope_cloud_connections" in metrics
            stats = (await http.get("/api/v1/stats")).json()
            assert stats["sessions"] == []
