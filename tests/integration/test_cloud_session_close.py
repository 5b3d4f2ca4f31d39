"""A cloud session the relay gives up is ended over the control socket (``close_session``),
so a rebuilt hop never leaves its old cloud session sending, even when the old peer
connection's own DTLS close cannot get through; and only its owner can end a session."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp
import httpx
import pytest

from scope_relay.cloud.app import STATE_KEY
from scope_relay.local.cloud_link.peer import CloudWebRTCClient
from scope_relay.local.server import RELAY_KEY

from helpers.control import control_socket
from helpers.lab_relay import relay_session
from helpers.losslab import Impairment, LossLab
from helpers.peers import connected
from helpers.waiting import wait_until

#: the cloud's session count must settle well inside ICE consent's ~30 s (what a lost
#: DTLS close leaves it to); generous for a loaded 2-core box
SETTLED = 10.0


def cut_outgoing(client: CloudWebRTCClient) -> None:
    """Drop every packet ``client``'s peer connection sends from now on (its DTLS
    close_notify included), as a dead uplink does; it still receives."""
    async def drop(data: bytes) -> None:
        return None

    assert client.pc is not None and client.pc.sctp is not None
    ice = {t.sender.transport.transport for t in client.pc.getTransceivers()
           if t.sender.transport is not None}
    ice.add(client.pc.sctp.transport.transport)
    for transport in ice:
        transport._send = drop


def owned_by(cloud: Any, connection_id: str | None) -> list[str]:
    return [sid for sid, s in cloud.app[STATE_KEY].sessions.items() if s.owner == connection_id]


async def request(ws: aiohttp.ClientWebSocketResponse, rid: str, **fields: Any) -> dict:
    """Send one request and return its reply (other messages, such as logs, are skipped)."""
    await ws.send_str(json.dumps({"request_id": rid, **fields}))
    while True:
        reply = await asyncio.wait_for(ws.receive_json(), 10)
        if reply.get("request_id") == rid:
            return reply


async def test_rebuilt_hop_leaves_one_cloud_session_when_the_old_path_is_dead(stack):
    cloud, relay = stack
    connection = relay.app[RELAY_KEY].connection
    async with connected(relay.url, {"pipeline_ids": ["test-tone"]}, video=False) as peer:
        await peer.wait_audio_frames(40)
        (session,) = relay.app[RELAY_KEY].sessions.values()
        old = session.cloud
        old_id = old.session_id
        cut_outgoing(old)  # its close can no longer reach the cloud
        old.failed.set()  # what the media watchdog does on a dead hop
        await wait_until(lambda: session.cloud is not old and session.cloud_reconnects == 1, 30)
        new_id = session.cloud.session_id
        await wait_until(lambda: owned_by(cloud, connection.connection_id) == [new_id], SETTLED)
        assert old_id not in cloud.app[STATE_KEY].sessions
        assert connection.session_releases["closed"] == 1, connection.session_releases
        mark = len(peer.received.audio)
        await peer.wait_audio_frames(mark + 50, timeout=30)  # the new hop plays on
        cut_outgoing(session.cloud)
    # the browser session closed over a dead uplink: its cloud session is ended by name too
    await wait_until(lambda: not cloud.app[STATE_KEY].sessions, SETTLED)
    await wait_until(lambda: connection.session_releases["closed"] == 2, SETTLED)
    assert connection.session_releases == {"closed": 2, "gone": 0, "failed": 0}


async def test_another_connection_cannot_close_a_session(stack):
    cloud, relay = stack
    async with connected(relay.url, {"pipeline_ids": ["test-tone"]}, video=False) as peer, \
            control_socket(cloud) as other:
        await peer.wait_audio_frames(20)
        (session,) = relay.app[RELAY_KEY].sessions.values()
        cloud_id = session.cloud.session_id
        made_up = await request(other, "c0", type="close_session", sessionId="0" * 32)
        reply = await request(other, "c1", type="close_session", sessionId=cloud_id)
        # exactly what a made-up id gets: another tenant's id cannot be probed either
        assert reply["type"] == "error" and reply["code"] == "UNKNOWN_SESSION"
        assert reply["status"] == 404
        assert reply["error"].replace(cloud_id, "0" * 32) == made_up["error"]
        assert cloud_id in cloud.app[STATE_KEY].sessions
        mark = len(peer.received.audio)
        await peer.wait_audio_frames(mark + 25, timeout=20)  # and it still streams
        assert session.cloud_reconnects == 0


async def test_bad_close_session_is_refused_and_the_socket_serves_on(control):
    for rid, fields in (("b1", {}), ("b2", {"sessionId": 7}), ("b3", {"sessionId": ""})):
        reply = await request(control, rid, type="close_session", **fields)
        assert reply["type"] == "error" and reply["code"] == "INVALID_MESSAGE", reply
        assert "sessionId" in reply["error"]
    reply = await request(control, "b4", type="close_session", sessionId="f" * 32)
    assert reply["code"] == "UNKNOWN_SESSION"  # an unknown (or already closed) id
    assert (await request(control, "p1", type="ping"))["type"] == "pong"
    assert not control.closed


async def test_owner_closes_its_session_once(stack):
    """The owner's ``close_session`` ends the session and replies ``session_closed``;
    asking again is ``UNKNOWN_SESSION`` (the relay counts that as already gone)."""
    cloud, relay = stack
    connection = relay.app[RELAY_KEY].connection
    async with connected(relay.url, {"pipeline_ids": ["test-tone"]}, video=False) as peer:
        await peer.wait_audio_frames(20)
        (session,) = relay.app[RELAY_KEY].sessions.values()
        cloud_id = session.cloud.session_id
        for expected in ("closed", "gone"):
            before = connection.session_releases[expected]
            connection.release_session(cloud_id)
            await wait_until(lambda e=expected, b=before:
                             connection.session_releases[e] >= b + 1, SETTLED)
        assert cloud_id not in cloud.app[STATE_KEY].sessions


async def test_an_outage_leaves_one_cloud_session_while_the_path_is_still_dead(monkeypatch):
    """The lab's outage, both ways (the cloud app in its own process and namespace; the
    control socket is never impaired): the watchdog rebuilds the hop, and the cloud ends
    the old session at once, not when ICE consent fails ~30 s later."""
    reason = LossLab.unavailable()
    if reason:
        pytest.skip(reason)
    monkeypatch.delenv("SCOPE_RELAY_ICE_LOOPBACK", raising=False)  # the hop crosses the veth
    with LossLab(upstream=Impairment()) as lab:
        async with relay_session(lab, {"pipeline_ids": ["test-tone"]}, video=False) as (
                peer, relay_stats), httpx.AsyncClient(base_url=lab.http_url) as cloud:
            old = (await relay_stats())["cloud_session"]

            async def cloud_sessions() -> list[str]:  # (short ids: the operator's view)
                return [s["sessionId"] for s in
                        (await cloud.get("/api/v1/stats")).json()["sessions"]]

            assert await cloud_sessions() == [old[:8]]
            lab.set(loss=1.0, direction="down")
            lab.set(loss=1.0, direction="up")
            deadline = time.monotonic() + 15
            while (await relay_stats())["media_timeouts"] < 1:
                assert time.monotonic() < deadline, "the watchdog never fired"
                await asyncio.sleep(0.25)
            deadline = time.monotonic() + SETTLED
            while old[:8] in (sessions := await cloud_sessions()):
                assert time.monotonic() < deadline, f"the old cloud session lives: {sessions}"
                await asyncio.sleep(0.25)
            assert len(sessions) <= 1, sessions  # at most the new hop's, still connecting
            lab.clear()
            deadline = time.monotonic() + 45
            while (stats := await relay_stats())["cloud_reconnects"] < 1:
                assert time.monotonic() < deadline, stats
                await asyncio.sleep(0.25)
            assert await cloud_sessions() == [stats["cloud_session"][:8]]
