"""The cloud's sender figures in the relay's stats (``cloud_send``), with the real cloud app,
relay and an aiortc page: the cloud's own figures for the session's hop arrive, and when the
cloud app goes away the relay's ``/api/v1/stats`` and ``/metrics`` still answer at once,
with the failure counted and shown, never an error page."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from typing import Any

import httpx

from scope_relay.local.server import RELAY_KEY

from helpers.peers import connected
from helpers.servers import cloud_server, relay_server


async def session_stats(http: httpx.AsyncClient) -> dict[str, Any]:
    """One read of ``/api/v1/stats``'s only session, asserted quick (< 2 s) and 200."""
    start = time.monotonic()
    response = await http.get("/api/v1/stats")
    assert response.status_code == 200, response.text
    assert time.monotonic() - start < 2.0, "a stats read waited on the cloud"
    (session,) = response.json()["sessions"]
    return dict(session)


async def poll(http: httpx.AsyncClient, done: Any, timeout: float = 30.0) -> dict[str, Any]:
    """Read the stats as the page does (twice a second) until ``done(session)``."""
    async with asyncio.timeout(timeout):
        while True:
            session = await session_stats(http)
            if done(session):
                return session
            await asyncio.sleep(0.5)


async def test_cloud_send_arrives_and_a_lost_cloud_is_shown_not_raised():
    async with contextlib.AsyncExitStack() as stack, contextlib.AsyncExitStack() as cloud_app:
        cloud = await cloud_app.enter_async_context(cloud_server())
        relay = await stack.enter_async_context(relay_server(cloud))
        http = await stack.enter_async_context(httpx.AsyncClient(base_url=relay.url, timeout=10))
        async with connected(relay.url, {"pipeline_ids": ["av-sync"]}) as peer:
            await peer.wait_video_frames(10, timeout=30)
            session = await poll(http, lambda s: s["cloud_send"]["available"]
                                 and (s["cloud_send"]["video"] or {}).get("keyframes"))
            send = session["cloud_send"]
            assert send["video"]["target_bitrate"] > 0 and send["fetch_failures"] == 0
            assert send["last_error"] is None and 0 <= send["age_s"] < 5
            assert session["page_video_mode"] == "forwarded"
            session = await poll(http, lambda s: (s["cloud_video_bitrate"] or 0) > 0
                                 and (s["page_video_bitrate"] or 0) > 0)
            # the relay read the cloud at most once a second, for all readers together
            cache = relay.app[RELAY_KEY].cloud_send
            reads, started = cache.fetches + cache.failures, time.monotonic()
            for _ in range(20):
                await session_stats(http)
                await http.get("/metrics")
            elapsed = time.monotonic() - started
            assert cache.fetches + cache.failures - reads <= elapsed + 1

            await cloud_app.aclose()  # the whole cloud app stops
            session = await poll(http, lambda s: s["cloud_send"]["fetch_failures"] >= 1)
            send = session["cloud_send"]
            assert send["available"] is False and send["last_error"], send
            metrics = (await http.get("/metrics")).text
            failures = re.search(r'^scope_relay_cloud_send_fetch_failures\{session="\w+"\} (\S+)$',
                                 metrics, re.M)
            assert failures and float(failures[1]) >= 1, metrics[-2000:]
