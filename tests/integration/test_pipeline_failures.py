"""A pipeline that raises is never silent: mid-stream, the receiver hears PIPELINE_FAILED
within a second (relay stats, the page's data channel, the cloud client's socket) while
another session keeps streaming; at load, the offer is refused with it."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time

import httpx
import numpy as np
from aiortc import RTCPeerConnection

from scope_relay.cloud.app import STATE_KEY
from scope_relay.cloud.pipelines import Pipeline, PipelineOutput
from scope_relay.local.server import RELAY_KEY
from scope_relay.rtc.ice import rtc_configuration

from helpers.control import control_socket
from helpers.peers import BrowserPeer, connected
from helpers.scope_client import ScopeLikeClient
from helpers.servers import cloud_server
from helpers.waiting import wait_until

#: calls that succeed before the failing pipeline raises (0.1 s of audio each)
GOOD_CALLS = 25


class FailsMidStream(Pipeline):
    """Plays a quiet tone for ``GOOD_CALLS`` calls, then raises (stamping when)."""

    pipeline_id = "fails-mid-stream"
    name = "Fails mid-stream"
    produces_audio = True
    sample_rate = 24_000
    raised = threading.Event()
    raised_at = 0.0

    def __init__(self, device: str = "cpu"):
        super().__init__(device)
        self.calls = 0

    def __call__(self, inputs, params):
        self.calls += 1
        if self.calls > GOOD_CALLS:
            cls = type(self)
            cls.raised_at = time.monotonic()
            cls.raised.set()
            raise RuntimeError("CUDA out of memory (pretend)")
        t = np.arange(2400) / 24_000
        return PipelineOutput(audio=(0.2 * np.sin(2 * np.pi * 440 * t))[None].astype(np.float32),
                              sample_rate=24_000)


class FailsLoading(Pipeline):
    pipeline_id = "fails-loading"
    name = "Fails loading"
    produces_audio = True

    def __init__(self, device: str = "cpu"):
        super().__init__(device)
        raise FileNotFoundError("no weights at /models/missing.safetensors")


def register(cloud, *classes: type[Pipeline]) -> None:
    registry = cloud.app[STATE_KEY].registry
    for cls in classes:
        registry.register(cls)


async def test_mid_stream_failure_reaches_the_receiver_and_others_keep_streaming(stack, caplog):
    caplog.set_level(logging.ERROR, logger="scope_relay.cloud")
    cloud, relay = stack
    register(cloud, FailsMidStream)
    FailsMidStream.raised.clear()
    async with connected(relay.url, {"pipeline_ids": ["test-tone"], "interval": 0.2,
                                     "duration": 0.1}, video=False) as healthy, \
            connected(relay.url, {"pipeline_ids": ["fails-mid-stream"]}, video=False) as doomed, \
            httpx.AsyncClient(base_url=relay.url) as http:
        told: list[dict] = []
        told_event = asyncio.Event()

        @doomed.channel.on("message")
        def on_message(message) -> None:
            told.append(json.loads(message))
            told_event.set()

        await doomed.wait_audio_frames(5)  # it streams before it fails

        async def relay_reports_failure() -> float:
            while True:  # (polls the page's own view of its session, as the page would)
                stats = (await http.get(f"/api/v1/webrtc/offer/{doomed.session_id}")).json()
                if stats["pipeline_failed"]:
                    return time.monotonic()
                await asyncio.sleep(0.02)

        seen_at = await asyncio.wait_for(relay_reports_failure(), 15)
        assert FailsMidStream.raised.is_set()
        latency = seen_at - FailsMidStream.raised_at
        print(f"PIPELINE_FAILED in the relay's stats {latency * 1000:.0f} ms after the raise")
        assert latency < 1.0, latency
        stats = (await http.get(f"/api/v1/webrtc/offer/{doomed.session_id}")).json()
        reason = "fails-mid-stream: RuntimeError: CUDA out of memory (pretend)"
        assert stats["pipeline_failed"] == reason

        # the page is told on its data channel
        await asyncio.wait_for(told_event.wait(), 1.0)
        assert told == [{"type": "error", "code": "PIPELINE_FAILED", "error": reason,
                         "status": 500}]

        # the relay stops waiting: its tracks end, the browser peer stays up, no reconnect
        relay_session = relay.app[RELAY_KEY].sessions[doomed.session_id]
        assert relay_session.processor.closed
        assert relay_session.pc.connectionState == "connected"
        state = cloud.app[STATE_KEY]
        await wait_until(lambda: len(state.sessions) == 1)  # the failed cloud session is gone

        # the other session keeps streaming, on the same cloud app and relay
        await healthy.wait_audio_frames(50, timeout=10)
        tail = healthy.received.audio_array()[:, -50 * 960:]
        assert np.abs(tail).max() > 2000  # beeps, not silence
        assert relay_session.cloud_reconnects == 0 and len(state.sessions) == 1
        (healthy_stats,) = [s for s in state.sessions.values()]
        assert healthy_stats.stats()["pipeline_failed"] is None
        assert (await http.get(f"/api/v1/webrtc/offer/{healthy.session_id}")).json()[
            "pipeline_failed"] is None

    # the traceback is in the cloud log
    traced = [r for r in caplog.records if r.exc_info and r.name.startswith("scope_relay.cloud")]
    assert any("CUDA out of memory" in str(r.exc_info[1]) for r in traced), caplog.records


async def test_cloud_client_gets_an_unsolicited_error_naming_the_session():
    """Scope's client (which consumes ``error`` messages without routing) gets the error
    with the session id; its socket stays up and serves the next request."""
    async with cloud_server() as cloud:
        register(cloud, FailsMidStream)
        client = ScopeLikeClient(cloud.ws_url)
        await client.connect()
        try:
            await client.start_webrtc({"pipeline_ids": ["fails-mid-stream"]}, produces_audio=True)
            await wait_until(lambda: client.errors, timeout=15)
            assert client.errors == [{
                "type": "error", "code": "PIPELINE_FAILED", "status": 500,
                "error": "fails-mid-stream: RuntimeError: CUDA out of memory (pretend)",
                "sessionId": client.session_id}]
            session = cloud.app[STATE_KEY].sessions[client.session_id]  # not torn down
            assert session.stats()["pipeline_failed"] == client.errors[0]["error"]
            assert (await client.request("ping"))["type"] == "pong"
        finally:
            await client.close()


async def test_load_failure_refuses_the_offer_with_the_exception_text(stack):
    cloud, relay = stack
    register(cloud, FailsLoading)
    async with httpx.AsyncClient(base_url=relay.url, timeout=30) as http:
        r = await http.post("/api/v1/pipeline/load", json={"pipeline_ids": ["fails-loading"]})
        assert r.status_code == 200 and r.json()["status"] == "error"
    async with connected(relay.url, {"pipeline_ids": ["test-tone"]}, video=False) as peer:
        failing = BrowserPeer(video=False)
        try:
            response = await failing.connect_relay(relay.url, {"pipeline_ids": ["fails-loading"]})
        finally:
            await failing.close()
        assert response.status_code == 500, response.text
        body = response.json()
        assert body["code"] == "PIPELINE_FAILED"
        assert body["error"] == ("fails-loading: failed to load: "
                                 "FileNotFoundError: no weights at /models/missing.safetensors")
        await peer.wait_audio_frames(20)  # the app keeps serving

    # straight to the cloud: the offer's error reply carries the same code and text
    pc = RTCPeerConnection(rtc_configuration())
    pc.addTransceiver("audio", direction="recvonly")
    try:
        await pc.setLocalDescription(await pc.createOffer())
        async with control_socket(cloud) as ws:
            await ws.send_json({"type": "offer", "request_id": "o1", "sdp": pc.localDescription.sdp,
                                "initialParameters": {"pipeline_ids": ["fails-loading"]}})
            reply = await asyncio.wait_for(ws.receive_json(), 30)
            while reply["type"] == "logs":  # the load's log lines may be forwarded first
                reply = await asyncio.wait_for(ws.receive_json(), 30)
    finally:
        await pc.close()
    assert reply["type"] == "error" and reply["request_id"] == "o1", reply
    assert reply["code"] == "PIPELINE_FAILED" and reply["status"] == 500
    assert "FileNotFoundError: no weights at /models/missing.safetensors" in reply["error"]
    assert not cloud.app[STATE_KEY].sessions
