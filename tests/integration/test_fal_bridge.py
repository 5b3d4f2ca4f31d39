"""deploy/fal: the bridge in front of the cloud app carries whole sessions and answers
exactly as the cloud app does, byte for byte (the bridge is no second control channel).

The bridge runs as a real process (``python deploy/fal/app.py --local``) with the cloud app
subprocess it starts; the same cloud app is also reached directly, to compare."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import socket
from collections.abc import AsyncIterator, Iterator
from types import ModuleType

import aiohttp
import httpx
import pytest
from aiohttp import WSMsgType, web
from websockets.asyncio.client import connect as websockets_connect
from websockets.exceptions import InvalidStatus

from scope_relay.local.cloud_link.target import CloudTarget
from scope_relay.local.server import RELAY_KEY, RelayConfig, create_relay_app

from helpers.control import open_control
from helpers.fal_bridge import LocalBridge, local_fal_bridge
from helpers.peers import beep_frequencies, connected, media_sections
from helpers.process_group import ROOT
from helpers.servers import serve
from helpers.waiting import wait_until

KEY = "bridge-test-key"
AUTH = {"Authorization": f"Key {KEY}"}


def http_of(ws_url: str) -> str:
    return ws_url.replace("ws://", "http://", 1).removesuffix("/ws")


@pytest.fixture(scope="module")
def bridge() -> Iterator[LocalBridge]:
    """The bridge and its cloud app (with an API key), for the module; at the end SIGTERM
    drains the cloud app and the bridge exits 0 (asserted)."""
    with local_fal_bridge(KEY) as bridge:
        yield bridge


async def test_a_full_session_runs_through_the_bridge(bridge):
    """relay -> bridge -> cloud app -> relay -> receiver: the tone arrives, on the tracks the
    flags say (the receiver offers video too; an audio-only chain answers it inactive)."""
    config = RelayConfig(CloudTarget(bridge.ws_url, api_key=KEY), loopback_ice=True)
    async with serve(create_relay_app(config), shutdown_timeout=1.0) as relay, connected(
            relay.url, {"pipeline_ids": ["test-tone"], "frequency": 1000, "interval": 0.5,
                        "duration": 0.3}, video=True, audio=True) as peer:
        await peer.wait_audio_frames(100)
        beeps = beep_frequencies(peer.received.audio)
        assert beeps, f"no beep received (peak {abs(peer.received.audio_array()).max()})"
        assert beeps[0] == pytest.approx(1000, rel=0.01)
        browser = media_sections(peer.answer_sdp)
        assert {k: v for k, v in browser.items() if k != "application"} == {
            "video": "inactive", "audio": "sendonly"}
        assert not peer.received.video
        (session,) = relay.app[RELAY_KEY].sessions.values()
        cloud_answer = media_sections(session.cloud.pc.remoteDescription.sdp)
        assert {k: v for k, v in cloud_answer.items() if k != "application"} == {"audio": "sendonly"}
        async with httpx.AsyncClient(timeout=10) as http:
            status = (await http.get(relay.url + "/api/v1/cloud/status")).json()
            cloud = (await http.get(http_of(bridge.ws_url) + "/api/v1/stats", headers=AUTH)).json()
        assert status["state"] == "ready" and status["url"] == bridge.ws_url
        (served,) = cloud["sessions"]  # the cloud app behind the bridge serves it
        assert session.cloud.session_id.startswith(served["sessionId"])


# Requests and frames the cloud app refuses or answers with an error; sent in this order.
BAD_FRAMES: list[str | bytes] = [
    '{"type": "nope", "request_id": "x"}',
    "not json",
    b"\x00\x01binary",
    '{"type": "offer", "request_id": "o1"}',
    '{"type": "api", "request_id": "a1", "method": "GET", "path": "/api/v1/nope"}',
    '{"type": "icecandidate", "request_id": "c1", "sessionId": "none", "candidate": null}',
    '{"type": "ping", "request_id": 7}',
]


async def _next_reply(ws: aiohttp.ClientWebSocketResponse) -> tuple[str, object, object]:
    """The next message that is not a ``logs`` one, as received: (type, data, extra)."""
    while True:
        msg = await asyncio.wait_for(ws.receive(), 10)
        if msg.type == WSMsgType.TEXT and msg.data.startswith('{"type":"logs"'):
            continue
        return msg.type.name, msg.data, msg.extra


async def _conversation(ws_url: str) -> list[tuple[str, object, object]]:
    """Every reply to :data:`BAD_FRAMES`, then to junk until the cloud closes the socket
    for too many invalid messages (its close code and reason included)."""
    async with aiohttp.ClientSession() as http:
        ws, ready = await open_control(http, ws_url, headers=AUTH)
        out: list[tuple[str, object, object]] = [("READY", sorted(ready), None)]
        for frame in BAD_FRAMES:
            await (ws.send_bytes(frame) if isinstance(frame, bytes) else ws.send_str(frame))
            out.append(await _next_reply(ws))
        for _ in range(60):
            await ws.send_str("{")
        while out[-1][0] not in ("CLOSE", "CLOSING", "CLOSED"):
            out.append(await _next_reply(ws))
        # (not ``ws.close_code``: the cloud cuts a misbehaving client's connection right after
        # its close frame, so whether the client's own close reply still gets out, and so
        # its close_code, is a race; the close frame, code and reason, is the contract)
        await ws.close()
    return out


async def test_bad_messages_get_the_same_replies_through_the_bridge(bridge):
    through, direct = await asyncio.gather(_conversation(bridge.ws_url),
                                           _conversation(bridge.cloud_ws_url))
    assert through == direct
    replies = [data for kind, data, _ in through if kind == "TEXT"]
    assert '"code":"UNKNOWN_TYPE"' in replies[0] and '"request_id":"x"' in replies[0]
    assert '"code":"INVALID_MESSAGE"' in replies[1] and "binary frames" in replies[2]
    assert through[-1][:3] == ("CLOSE", 1008, "too many invalid messages")


async def _refusal(ws_url: str, headers: dict[str, str]) -> tuple[int, int, bytes, str | None]:
    """How an upgrade is refused: the status aiohttp (the relay's client) sees, and the
    status, body and content type the websockets client sees."""
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(ws_url, headers=headers)
    with pytest.raises(InvalidStatus) as invalid:
        async with websockets_connect(ws_url, additional_headers=headers):
            pass
    response = invalid.value.response
    return (refused.value.status, response.status_code, bytes(response.body or b""),
            response.headers.get("Content-Type"))


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Key wrong"}], ids=["no-key", "wrong-key"])
async def test_a_missing_or_wrong_key_is_refused_through_the_bridge_as_directly(bridge, headers):
    through = await _refusal(bridge.ws_url, headers)
    assert through == await _refusal(bridge.cloud_ws_url, headers)
    assert through[:2] == (401, 401) and b"UNAUTHORIZED" in through[2]


HTTP_CASES = [
    ("GET", "/health", None, {}),
    ("GET", "/ready", None, {}),
    ("GET", "/api/v1/pipelines", None, AUTH),
    ("GET", "/api/v1/pipelines", None, {"Authorization": "Key wrong"}),
    ("GET", "/api/v1/pipeline/status?x=1", None, AUTH),
    ("GET", "/api/v1/nope", None, AUTH),
    ("POST", "/api/v1/pipeline/load", b'{"pipeline_ids": ["nope"]}', AUTH),
    ("POST", "/api/v1/pipeline/load", b"{not json", AUTH),
    ("DELETE", "/api/v1/pipelines", None, AUTH),
]


async def test_http_routes_answer_as_the_cloud_app_does(bridge):
    async with httpx.AsyncClient(timeout=10) as http:
        for method, path, body, headers in HTTP_CASES:
            answers = [await http.request(method, http_of(url) + path, content=body, headers=headers)
                       for url in (bridge.ws_url, bridge.cloud_ws_url)]
            through, direct = ((r.status_code, r.headers.get("content-type"), r.content)
                               for r in answers)
            assert through == direct, (method, path)
        metrics = await http.get(http_of(bridge.ws_url) + "/metrics", headers=AUTH)
    assert metrics.status_code == 200 and "scope_cloud_sessions" in metrics.text


async def test_forty_sockets_with_one_key_are_accepted_through_the_bridge(bridge):
    """Behind the bridge every client has the bridge's address: with the cloud app's default
    per-address cap (32) the 33rd socket, and everyone else's, got 429. The bridge turns
    that cap off; the per-key cap (64) still holds."""
    async with aiohttp.ClientSession() as http:
        sockets = []
        try:
            for _ in range(40):
                ws, _ready = await open_control(http, bridge.ws_url, headers=AUTH)
                sockets.append(ws)
            assert all(not ws.closed for ws in sockets)
            await sockets[-1].send_json({"type": "ping", "request_id": "p"})
            reply = await asyncio.wait_for(sockets[-1].receive_json(), 10)
            while reply["type"] == "logs":
                reply = await asyncio.wait_for(sockets[-1].receive_json(), 10)
            assert reply["type"] == "pong", reply
        finally:
            await asyncio.gather(*(ws.close() for ws in sockets))


def test_the_bridge_starts_the_cloud_app_without_a_per_address_cap(bridge_module):
    command = bridge_module.CloudProcess(["--max-sockets-per-address", "5"]).command()
    flags = [i for i, part in enumerate(command) if part == "--max-sockets-per-address"]
    assert command[flags[-1] + 1] == "0"  # ours last: argparse keeps the last one


async def test_operator_routes_need_the_key_through_the_bridge(bridge):
    async with httpx.AsyncClient(timeout=10) as http:
        for path in ("/metrics", "/api/v1/stats"):
            assert (await http.get(http_of(bridge.ws_url) + path, headers=AUTH)).status_code == 200
            assert (await http.get(http_of(bridge.ws_url) + path)).status_code == 401


async def test_without_a_key_operator_routes_are_refused_and_the_rest_served():
    """On fal the cloud app runs without a key (fal's gateway checks callers): every caller
    the gateway admits must not read every session's figures through /metrics or the
    all-sessions /api/v1/stats. The bridge refuses them; the routes relays use still work."""
    with local_fal_bridge() as keyless:
        async with httpx.AsyncClient(timeout=10) as http:
            base = http_of(keyless.ws_url)
            for path in ("/metrics", "/api/v1/stats", "/api/v1//stats", "/api/v1/stats/"):
                refused = await http.get(base + path)
                assert refused.status_code == 403, path
                assert refused.json()["code"] == "FORBIDDEN"
            assert (await http.get(base + "//api/v1/stats")).status_code == 404  # no route at all
            # the cloud app itself would have answered (what the bridge used to pass on)
            assert (await http.get(http_of(keyless.cloud_ws_url) + "/api/v1/stats")).status_code == 200
            assert (await http.get(base + "/api/v1/pipelines")).status_code == 200
            assert (await http.get(base + "/ready")).status_code == 200
        async with aiohttp.ClientSession() as session:
            ws, _ready = await open_control(session, keyless.ws_url)
            await ws.close()


# --- the bridge's frame and close handling, in process against an echo upstream ------------
@pytest.fixture(scope="module")
def bridge_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fal_bridge", ROOT / "deploy" / "fal" / "bridge.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@contextlib.asynccontextmanager
async def echo_upstream() -> AsyncIterator[tuple[str, dict[str, list]]]:
    """A ``/ws`` that echoes each frame, closes as told by a ``close:<code>:<reason>`` text,
    refuses an upgrade without ``Authorization`` (401 with a body), and records what it saw."""
    seen: dict[str, list] = {"auth": [], "closes": []}

    async def handler(request: web.Request) -> web.StreamResponse:
        if "Authorization" not in request.headers:
            return web.json_response({"error": "who are you", "code": "UNAUTHORIZED"}, status=401)
        seen["auth"].append(request.headers["Authorization"])
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        while True:
            msg = await ws.receive()
            if msg.type == WSMsgType.TEXT and msg.data.startswith("close:"):
                _, code, reason = msg.data.split(":", 2)
                await ws.close(code=int(code), message=reason.encode())
                break
            if msg.type == WSMsgType.TEXT:
                await ws.send_str(msg.data)
            elif msg.type == WSMsgType.BINARY:
                await ws.send_bytes(msg.data)
            else:
                seen["closes"].append((msg.data, msg.extra) if msg.type == WSMsgType.CLOSE else msg.type)
                break
        return ws

    app = web.Application()
    app.router.add_get("/ws", handler)
    async with serve(app, shutdown_timeout=1.0) as served:
        yield served.url, seen


@contextlib.asynccontextmanager
async def uvicorn_serving(app: object) -> AsyncIterator[str]:
    """``app`` under uvicorn in this event loop, on a free port (signals left alone)."""
    import uvicorn

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    server = Server(uvicorn.Config(app, lifespan="on", log_level="warning"))  # type: ignore[arg-type]
    task = asyncio.ensure_future(server.serve(sockets=[listener]))
    try:
        await wait_until(lambda: server.started or task.done(), 10)
        assert server.started
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
        listener.close()


async def test_frames_and_closes_pass_unchanged_both_ways(bridge_module):
    async with echo_upstream() as (upstream, seen), \
            uvicorn_serving(bridge_module.create_bridge(upstream)) as url, \
            aiohttp.ClientSession() as http:
        ws_url = url.replace("http://", "ws://") + "/ws"
        headers = {"Authorization": "Bearer abc"}
        ws = await http.ws_connect(ws_url, headers=headers, max_msg_size=0)
        frames: list[str | bytes] = ["héllo ✓ {\"type\": 1}", bytes(range(256)), os.urandom(1 << 20), ""]
        for frame in frames:
            await (ws.send_bytes(frame) if isinstance(frame, bytes) else ws.send_str(frame))
            echoed = await asyncio.wait_for(ws.receive(), 10)
            assert echoed.type == (WSMsgType.BINARY if isinstance(frame, bytes) else WSMsgType.TEXT)
            assert echoed.data == frame
        await ws.close(code=4001, message=b"bye from the client")
        await wait_until(lambda: seen["closes"], 10)
        assert seen["closes"] == [(4001, "bye from the client")]
        assert seen["auth"] == ["Bearer abc"]

        ws = await http.ws_connect(ws_url, headers=headers)
        await ws.send_str("close:4002:bye from upstream")
        closing = await asyncio.wait_for(ws.receive(), 10)
        assert (closing.type, closing.data, closing.extra) == (
            WSMsgType.CLOSE, 4002, "bye from upstream")

        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(ws_url)
        assert refused.value.status == 401
        async with httpx.AsyncClient() as client:  # the HTTP routes go to the same upstream
            assert (await client.get(url + "/health")).status_code == 404
