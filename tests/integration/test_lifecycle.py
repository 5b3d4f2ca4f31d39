"""Lifecycles and limits: nothing waits forever, nothing is left half-done when a caller
gives up, and no client can make the servers hold unbounded work."""

from __future__ import annotations

import asyncio
import socket
import threading

import aiohttp
import pytest

from scope_relay.cloud.app import STATE_KEY
from scope_relay.cloud.builtin_pipelines.signals import BUILTIN_PIPELINES
from scope_relay.cloud.hosting.manager import PipelineManager
from scope_relay.cloud.hosting.registry import PipelineRegistry
from scope_relay.cloud.pipelines.base import Pipeline, PipelineOutput
from scope_relay.local.cloud_link.control_socket import CloudConnectionManager
from scope_relay.local.cloud_link.target import CloudTarget
from scope_relay.local.server import RELAY_KEY
from scope_relay.local.sessions import browser_session as relay_session
from scope_relay.protocol import messages as m
from scope_relay.protocol.errors import Unavailable

from helpers.control import control_socket
from helpers.peers import BrowserPeer
from helpers.servers import cloud_server


class GatedPipeline(Pipeline):
    """Takes as long to load as the test says (a real model takes minutes)."""

    pipeline_id = "gated"
    name = "Gated"
    produces_audio = True
    sample_rate = 48_000
    gate = threading.Event()
    instances = 0

    def __init__(self, device: str = "cpu"):
        super().__init__(device)
        type(self).instances += 1
        if not self.gate.wait(30):
            raise TimeoutError("gate never opened")

    def __call__(self, inputs, params) -> PipelineOutput | None:
        return None


async def test_a_load_whose_caller_gives_up_still_finishes():
    manager = PipelineManager(PipelineRegistry([*BUILTIN_PIPELINES, GatedPipeline]))
    GatedPipeline.gate.clear()
    GatedPipeline.instances = 0
    try:
        with pytest.raises(asyncio.TimeoutError):  # e.g. a request timeout or a closed socket
            await asyncio.wait_for(manager.load(["gated"]), 0.2)
        assert manager.status()["status"] == "loading"
        GatedPipeline.gate.set()
        state = await asyncio.wait_for(manager.load(["gated"]), 10)  # waits for the same load
        assert state.status == "loaded" and manager.status()["status"] == "loaded"
        assert GatedPipeline.instances == 1  # the abandoned load finished; not loaded twice
    finally:
        GatedPipeline.gate.set()
        await manager.close()


async def test_user_id_is_known_to_the_very_next_message():
    async with cloud_server(require_user_id=True) as cloud, control_socket(cloud) as ws:
        await ws.send_str('{"type": "set_user_id", "user_id": "u1"}')
        await ws.send_str('{"type": "get_ice_servers", "request_id": "i1"}')  # no waiting
        replies = [await asyncio.wait_for(ws.receive_json(), 5) for _ in range(2)]
        assert [r["type"] for r in replies] == ["user_id_set", "ice_servers"], replies
        assert not ws.closed


async def test_session_and_request_limits_answer_busy():
    async with cloud_server(max_sessions=1, max_requests_in_flight=1) as cloud, \
            control_socket(cloud) as ws:
        peers = [BrowserPeer(video=False), BrowserPeer(video=False)]
        try:
            for peer in peers:
                await peer.pc.setLocalDescription(await peer.pc.createOffer())
            replies = []
            for n, peer in enumerate(peers):
                await ws.send_json({"type": "offer", "request_id": f"o{n}",
                                    "sdp": peer.pc.localDescription.sdp,
                                    "initialParameters": {"pipeline_ids": ["test-tone"]}})
                replies.append(await asyncio.wait_for(ws.receive_json(), 20))
            assert replies[0]["type"] == "answer"
            assert replies[1]["type"] == "error" and replies[1]["code"] == "BUSY"
            assert replies[1]["status"] == 429
            assert replies[1]["request_id"] == "o1" and len(cloud.app[STATE_KEY].sessions) == 1
            # two requests at once with room for one: the second is refused, not queued
            await ws.send_str('{"type": "api", "request_id": "a1", "method": "POST", '
                              '"path": "/api/v1/pipeline/load", '
                              '"body": {"pipeline_ids": ["av-sync"]}}')
            await ws.send_str('{"type": "api", "request_id": "a2", "method": "GET", '
                              '"path": "/api/v1/pipelines"}')
            await ws.send_str('{"type": "get_ice_servers", "request_id": "a3"}')
            replies = {}
            while len(replies) < 3:
                reply = await asyncio.wait_for(ws.receive_json(), 20)
                replies[reply.get("request_id")] = reply
            # an api call is refused the way Scope's client reads api failures
            assert replies["a2"]["type"] == "api_response" and replies["a2"]["status"] == 429
            assert replies["a2"]["code"] == "BUSY" and replies["a2"]["data"]["detail"]
            assert replies["a3"]["type"] == "error" and replies["a3"]["code"] == "BUSY"
            assert replies["a1"]["type"] == "api_response" and replies["a1"]["status"] == 200
        finally:
            for peer in peers:
                await peer.close()


async def test_a_browser_that_never_connects_is_let_go(monkeypatch, stack):
    """A page that posts its offer and goes away must not hold a cloud session forever."""
    monkeypatch.setattr(relay_session, "CONNECT_TIMEOUT", 1.0)
    cloud, relay = stack
    peer = BrowserPeer(video=False)
    try:
        await peer.pc.setLocalDescription(await peer.pc.createOffer())
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{relay.url}/api/v1/webrtc/offer", json={
                    "sdp": peer.pc.localDescription.sdp, "type": "offer",
                    "initialParameters": {"pipeline_ids": ["test-tone"]}}) as response:
                assert response.status == 200
        # the answer is never applied: this browser is gone
        (session,) = relay.app[RELAY_KEY].sessions.values()
        (cloud_session,) = cloud.app[STATE_KEY].sessions.values()
        await asyncio.wait_for(session.closed.wait(), 20)
        await asyncio.wait_for(cloud_session.closed.wait(), 20)
        assert not relay.app[RELAY_KEY].sessions and not cloud.app[STATE_KEY].sessions
    finally:
        await peer.close()


async def test_requests_waiting_for_a_cloud_that_never_comes_fail_on_close():
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    manager = CloudConnectionManager(CloudTarget(f"ws://127.0.0.1:{port}/ws"), ready_timeout=300)
    await manager.start()
    waiting = asyncio.ensure_future(manager.request(m.GetIceServers()))
    await manager.close()
    with pytest.raises(Unavailable, match="closed"):
        await asyncio.wait_for(waiting, 5)  # at once, not after the 300 s ready timeout


async def test_offers_arriving_together_still_respect_the_session_limit():
    async with cloud_server(max_sessions=1) as cloud, control_socket(cloud) as ws:
        peers = [BrowserPeer(video=False) for _ in range(3)]
        try:
            for peer in peers:
                await peer.pc.setLocalDescription(await peer.pc.createOffer())
            for n, peer in enumerate(peers):  # all sent before any is answered
                await ws.send_json({"type": "offer", "request_id": f"o{n}",
                                    "sdp": peer.pc.localDescription.sdp,
                                    "initialParameters": {"pipeline_ids": ["test-tone"]}})
            replies = []
            while len(replies) < 3:
                reply = await asyncio.wait_for(ws.receive_json(), 20)
                if reply.get("type") != "logs":
                    replies.append(reply)
            assert sorted(r["type"] for r in replies) == ["answer", "error", "error"], replies
            assert all(r["code"] == "BUSY" for r in replies if r["type"] == "error")
            assert len(cloud.app[STATE_KEY].sessions) == 1
        finally:
            for peer in peers:
                await peer.close()
