"""Readiness and drain, as an orchestrator drives them: ``/ready``, the capacity gauges,
and SIGTERM to a real ``scope-relay cloud`` process with a live session."""

from __future__ import annotations

import asyncio
import signal
import time

import httpx
import pytest

from scope_relay.local.server import RELAY_KEY

from helpers.control import control_socket
from helpers.peers import connected
from helpers.processes import cloud_process
from helpers.servers import cloud_server, relay_server
from helpers.waiting import wait_until

FRAMES_PER_SECOND = 50  # 20 ms audio frames


async def ready_status(http: httpx.AsyncClient) -> tuple[int, str]:
    response = await http.get("/ready")
    return response.status_code, response.json()["status"]


async def test_ready_and_capacity_gauges_follow_the_sessions():
    async with cloud_server(max_sessions=1) as cloud, relay_server(cloud) as relay, \
            httpx.AsyncClient(base_url=cloud.url, timeout=10) as http:
        assert await ready_status(http) == (200, "ready")
        metrics = (await http.get("/metrics")).text
        assert "scope_cloud_session_capacity 1.0" in metrics
        assert "scope_cloud_active_sessions 0.0" in metrics
        async with connected(relay.url, {"pipeline_ids": ["test-tone"]}, video=False) as peer:
            await peer.wait_audio_frames(5)
            assert await ready_status(http) == (503, "full")
            assert "scope_cloud_active_sessions 1.0" in (await http.get("/metrics")).text
        await wait_until(lambda: not relay.app[RELAY_KEY].sessions)
        status: list[tuple[int, str]] = []

        async def ready_again() -> bool:
            status.append(await ready_status(http))
            return status[-1] == (200, "ready")

        deadline = time.monotonic() + 10
        while not await ready_again():
            assert time.monotonic() < deadline, status[-1]
            await asyncio.sleep(0.05)


def told_draining(caplog: pytest.LogCaptureFixture, detail: str = "") -> bool:
    """Whether the relay logged the cloud's DRAINING error (sent before its socket closed)."""
    return any("cloud error: DRAINING" in r.getMessage() and detail in r.getMessage()
               for r in caplog.records)


async def test_sigterm_drains_live_sessions_then_exits_zero(caplog):
    async with cloud_process("--drain-seconds", "60") as cloud, relay_server(cloud) as relay, \
            httpx.AsyncClient(base_url=cloud.url, timeout=10) as http:
        async with connected(relay.url, {"pipeline_ids": ["test-tone"]}, video=False) as peer:
            await peer.wait_audio_frames(10)
            cloud.proc.send_signal(signal.SIGTERM)
            sent = time.monotonic()
            while (await ready_status(http)) != (503, "draining"):
                assert time.monotonic() - sent < 1.0, "/ready did not go 503 within 1 s"
                await asyncio.sleep(0.02)

            async with control_socket(cloud) as ws:  # a new offer is refused, and why
                await ws.send_json({"type": "offer", "request_id": "late", "sdp": "v=0"})
                reply = await asyncio.wait_for(ws.receive_json(), 10)
            assert (reply["type"], reply["code"], reply["status"]) == ("error", "DRAINING", 503)

            # the live session keeps streaming: 5 s more of audio reach the receiver
            await peer.wait_audio_frames(5 * FRAMES_PER_SECOND, timeout=20)
            assert cloud.proc.returncode is None
            # the user stops: the drain completes, the relay is told, the process exits 0
            async with httpx.AsyncClient(base_url=relay.url, timeout=10) as relay_http:
                stopped = await relay_http.delete(f"/api/v1/webrtc/offer/{peer.session_id}")
            assert stopped.status_code == 200
            assert await cloud.wait(timeout=20) == 0
    assert any("drained: 0 sessions cut off" in line for line in cloud.output), cloud.output
    assert told_draining(caplog)


async def test_drain_seconds_bound_a_session_that_does_not_end(caplog):
    async with cloud_process("--drain-seconds", "1") as cloud, relay_server(cloud) as relay:
        async with connected(relay.url, {"pipeline_ids": ["test-tone"]}, video=False) as peer:
            await peer.wait_audio_frames(10)
            cloud.proc.send_signal(signal.SIGTERM)
            assert await cloud.wait(timeout=20) == 0
    assert told_draining(caplog, "after draining for 1 s")
    assert any("drained: 1 sessions cut off" in line for line in cloud.output), cloud.output


@pytest.mark.parametrize("sig", [signal.SIGINT])
async def test_sigint_stops_at_once(sig):
    async with cloud_process("--drain-seconds", "600") as cloud, relay_server(cloud) as relay:
        async with connected(relay.url, {"pipeline_ids": ["test-tone"]}, video=False) as peer:
            await peer.wait_audio_frames(5)
            cloud.proc.send_signal(sig)
            assert await cloud.wait(timeout=20) == 0
