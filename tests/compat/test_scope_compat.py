"""Scope's own cloud client, unchanged, can use our cloud app (docs/scope-compatibility.md;
the messages themselves: docs/protocol.md).

Each numbered point of that document's table has a test here that fails if the point is
broken.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time

import aiohttp
import pytest

from scope_relay.cloud.app import STATE_KEY
from scope_relay.protocol import messages as m

from helpers.control import control_socket
from helpers.peers import media_sections
from helpers.scope_client import SCOPE_EXTRA_KEYS, ScopeApiError, ScopeLikeClient
from helpers.servers import cloud_server
from helpers.waiting import wait_until


async def scope_session(cloud, pipeline: str, *, hint: bool | None = None,
                        extra: dict | None = None) -> ScopeLikeClient:
    client = ScopeLikeClient(cloud.ws_url, user_id="scope-user")
    await client.connect()
    pipelines = {p["id"]: p for p in (await client.api("GET", "/api/v1/pipelines"))["pipelines"]}
    await client.api("POST", "/api/v1/pipeline/load",
                     {"pipeline_ids": [pipeline], "load_params": {}})
    status = await client.api("GET", "/api/v1/pipeline/status")
    assert status["status"] == "loaded" and status["pipeline_id"] == pipeline
    produces_audio = pipelines[pipeline]["produces_audio"] if hint is None else hint
    params = {"prompts": [{"text": "a forest", "weight": 1.0}], **SCOPE_EXTRA_KEYS,
              **(extra or {})}
    await client.start_webrtc(params, produces_audio=produces_audio)
    return client


@pytest.mark.parametrize("pipeline,wants_video", [("test-tone", False), ("av-sync", True)])
async def test_scope_client_streams_from_our_cloud(pipeline, wants_video):
    async with cloud_server() as cloud:
        client = await scope_session(cloud, pipeline)
        try:
            await client.wait_media(audio=50, video=24 if wants_video else 0, timeout=30)
            sections = media_sections(client.answer_sdp)
            assert sections["audio"] == "sendonly"
            if wants_video:
                assert sections["video"] == "sendonly" and client.video_frames >= 24
            else:  # audio-only: the video m-line is declined, nothing flows either way
                assert sections["video"] == "inactive" and client.video_frames == 0
            assert client.black.sent == 0  # the black frames are declined, never piled up
            session = cloud.app[STATE_KEY].sessions[client.session_id]
            assert session.drained_input_frames == 0
            assert client.errors == []  # point 2: never an error message to this client
        finally:
            await client.close()


async def test_1_ready_is_strictly_first_even_while_warming_up_and_logging():
    async with cloud_server() as cloud:
        state = cloud.app[STATE_KEY]
        state.ready.clear()  # the app is "warming up"
        async with aiohttp.ClientSession() as http:
            ws = await http.ws_connect(cloud.ws_url)
            for i in range(60):
                logging.getLogger("scope_relay.cloud.test").warning("warming %d", i)
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(ws.receive(), 0.5)  # nothing at all before ready
            state.ready.set()
            first = json.loads((await asyncio.wait_for(ws.receive(), 5)).data)
            assert first["type"] == "ready" and first["connection_id"]
            await ws.close()


@pytest.mark.parametrize("method,path,body", [
    ("POST", "/api/v1/pipeline/load", {"pipeline_ids": ["no-such-pipeline"]}),
    ("GET", "/api/v1/no/such/route", None),
    ("POST", "/api/v1/pipeline/load", "not an object"),
    ("DELETE", "/api/v1/pipelines", None),
    ("FETCH", "/api/v1/pipelines", None),  # refused while parsing: still an api_response
    ("GET", "no-leading-slash", None),
])
async def test_2_failed_api_calls_answer_fast_with_detail(method, path, body):
    async with cloud_server() as cloud:
        client = ScopeLikeClient(cloud.ws_url)
        await client.connect()
        try:
            started = time.monotonic()
            with pytest.raises(ScopeApiError) as failure:
                await client.api(method, path, body, timeout=5)
            assert time.monotonic() - started < 1.0
            assert str(failure.value)  # data.detail was there to read
            reply = next(msg for msg in client.all_messages if msg.get("type") == "api_response")
            assert reply["status"] >= 400 and isinstance(reply["data"], dict)
            assert reply["data"]["detail"] and reply["error"] and reply["code"]
            assert client.errors == []
        finally:
            await client.close()


async def test_3_replies_echo_request_id_carry_status_and_session_id():
    async with cloud_server() as cloud:
        client = await scope_session(cloud, "test-tone")
        try:
            replies = [msg for msg in client.all_messages if msg.get("type") not in ("logs",)]
            assert replies and all("request_id" in r and r["status"] == 200 for r in replies
                                   if r["type"] != "user_id_set")
            assert all(isinstance(r["data"], dict) for r in replies if "data" in r)
            assert client.session_id
        finally:
            await client.close()


async def test_4_unknown_initial_parameters_are_ignored():
    async with cloud_server() as cloud:
        client = await scope_session(cloud, "test-tone",
                                     extra={"some_future_key": [1, 2, {"x": None}]})
        try:
            await client.wait_media(audio=10)
            assert client.errors == []
        finally:
            await client.close()


#: Cloud media time after which audio, had an audio track been sending it, would have
#: reached the client: its first chunk goes out one playout delay (0.1 s) after media
#: time 0, and a loopback hop delivers frames within tens of ms.
AUDIO_WOULD_HAVE_COME = 1.0


@pytest.mark.parametrize("pipeline,hint,video", [
    ("av-sync", False, 10),      # hint says no audio: no audio m-line, video still flows
    ("test-tone", False, 0),     # audio-only chain offered no audio m-line: silence, no error
    ("passthrough", True, 5),    # hint says audio, chain has none: audio m-line declined
])
async def test_5_flags_disagreeing_with_hints_are_not_errors(pipeline, hint, video):
    async with cloud_server() as cloud:
        client = await scope_session(cloud, pipeline, hint=hint)
        try:
            if video:
                await client.wait_media(video=video, timeout=30)
            sections = media_sections(client.answer_sdp)
            session = cloud.app[STATE_KEY].sessions[client.session_id]
            if not hint:
                assert "audio" not in sections and session.audio_track is None
            else:
                assert sections["audio"] == "inactive"
            # No audio, waited for: the chain has been running (generating, for av-sync and
            # test-tone) long enough for audio to have arrived if any were sent.
            await wait_until(lambda: session.buffer.media_now() >= AUDIO_WOULD_HAVE_COME, 10)
            assert client.audio_frames == 0
            if pipeline == "passthrough":  # Scope's black frames are the input: they come back
                assert sections["video"] == "sendrecv" and client.black.sent >= 1
            assert client.errors == []
        finally:
            await client.close()


async def test_6_idle_socket_survives_and_dead_peer_is_dropped():
    async with cloud_server(heartbeat=0.3) as cloud:
        state = cloud.app[STATE_KEY]
        client = ScopeLikeClient(cloud.ws_url)
        await client.connect()
        # a peer whose WebSocket layer never answers pings: it is detected and dropped
        async with control_socket(cloud, autoping=False) as dead:
            assert state.connections == 2
            while True:  # pings arrive, go unanswered, then the server closes
                msg = await asyncio.wait_for(dead.receive(), 5)
                if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED,
                                aiohttp.WSMsgType.CLOSING):
                    break
            # the Scope-like client sends nothing for 10x the heartbeat: the scenario itself
            await asyncio.sleep(3.0)
            assert not client.ws.closed
            assert state.connections == 1
            assert (await client.api("GET", "/health"))["status"] == "ok"
        await client.close()


async def test_7_set_user_id_with_and_without_request_id():
    async with cloud_server() as cloud, control_socket(cloud) as ws:
        await ws.send_json({"type": "set_user_id", "user_id": "u1"})
        reply = await asyncio.wait_for(ws.receive_json(), 5)
        assert reply["type"] == "user_id_set" and reply["user_id"] == "u1"
        assert "request_id" not in reply
        await ws.send_json({"type": "set_user_id", "user_id": "u2", "request_id": "r7"})
        reply = await asyncio.wait_for(ws.receive_json(), 5)
        assert reply["request_id"] == "r7" and reply["user_id"] == "u2"


async def test_8_no_authorization_header_needed_without_key_and_refused_with_one():
    async with cloud_server() as cloud:
        client = ScopeLikeClient(cloud.ws_url)
        await client.connect()
        await client.close()
    async with cloud_server(api_key="sekrit") as cloud, aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(cloud.ws_url)
        assert refused.value.status == 401
        for scheme in ("Key", "Bearer"):
            async with control_socket(cloud, headers={"Authorization": f"{scheme} sekrit"}):
                pass  # connected, and ready came first


async def test_9_logs_carry_level_at_most_50_lines_and_stay_small():
    async with cloud_server(log_interval=0.05) as cloud:
        client = ScopeLikeClient(cloud.ws_url)
        await client.connect()
        try:
            log = logging.getLogger("scope_relay.cloud.test")
            for i in range(120):
                log.warning("line %d", i)
            log.warning("huge %s", "x" * (5 * 1024 * 1024))
            for _ in range(60):  # long lines of the characters JSON escapes the longest
                log.warning("wide %s", ("\x01é😀" * 20_000)[:20_000])
            await client.wait_log_lines("scope_relay.cloud.test", 181, timeout=10)
            received = [line for batch in client.log_messages for line in batch]
            assert max(len(batch) for batch in client.log_messages) <= 50
            ours = [line for line in received if "scope_relay.cloud.test" in line]
            assert len(ours) == 181 and all(" - WARNING - " in line for line in ours)
            assert all(len(m.encode({"type": "logs", "lines": b}).encode()) < m.MAX_MESSAGE_BYTES
                       for b in client.log_messages)
        finally:
            await client.close()


def test_9_nothing_over_4_mib_is_ever_encoded():
    with pytest.raises(ValueError, match="exceeds"):
        m.encode({"type": "api_response", "data": {"blob": "x" * m.MAX_MESSAGE_BYTES}})
    # a lone surrogate (from a client's own escaped text) still encodes, as an escape
    assert json.loads(m.encode({"type": "error", "error": "\ud800"}))["error"] == "\ud800"


async def test_10_schemas_and_pipeline_id():
    async with cloud_server() as cloud:
        client = ScopeLikeClient(cloud.ws_url)
        await client.connect()
        try:
            schemas = await client.api("GET", "/api/v1/pipelines/schemas")
            assert set(schemas) >= {"test-tone", "av-sync", "passthrough", "bursty-av"}
            assert schemas["test-tone"]["params"]["frequency"]["type"] == "number"
            await client.api("POST", "/api/v1/pipeline/load",
                             {"pipeline_ids": ["passthrough", "test-tone"]})
            status = await client.api("GET", "/api/v1/pipeline/status")
            assert status["pipeline_id"] == "test-tone"
            assert status["pipeline_ids"] == ["passthrough", "test-tone"]
            # the chain rule: video from the last stage, audio from any, input from the first
            assert (status["produces_video"], status["produces_audio"]) == (False, True)
        finally:
            await client.close()


async def test_11_max_duration_and_access_denied_codes():
    async with cloud_server(max_session_seconds=0.5) as cloud:
        client = ScopeLikeClient(cloud.ws_url)
        await client.connect()
        await client.wait_closed(5)  # the server ends the socket
        assert [e["code"] for e in client.errors] == ["MAX_DURATION_EXCEEDED"]
        await client.close()
    async with cloud_server(allowed_user_ids={"alice"}) as cloud, control_socket(cloud) as ws:
        await ws.send_json({"type": "set_user_id", "user_id": "mallory"})
        denied = await asyncio.wait_for(ws.receive_json(), 5)
        assert denied == {"type": "error", "error": "Access denied", "code": "ACCESS_DENIED",
                          "status": 403}
        closing = await asyncio.wait_for(ws.receive(), 5)
        assert closing.type == aiohttp.WSMsgType.CLOSE and closing.data == 4003
