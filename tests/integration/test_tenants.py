"""Tenants of one cloud app are isolated: a control connection acts on and sees only its own
sessions and log lines; sockets are capped per address and per key; any malformed
``Authorization`` header is a 401, never a 500."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import httpx
import pytest
from aiortc import RTCSessionDescription

from scope_relay.cloud.app import STATE_KEY

from helpers.control import control_socket
from helpers.peers import BrowserPeer
from helpers.servers import Served, cloud_server
from helpers.waiting import wait_until

#: a candidate that parses: only whose session it is decides the reply
CANDIDATE = {"candidate": "candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host",
             "sdpMid": "0", "sdpMLineIndex": 0}
WS_UPGRADE = {"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
              "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}


class Tenant:
    """One control connection: replies by ``request_id``, unsolicited messages, log lines."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse):
        self.ws = ws
        self.lines: list[str] = []
        self.replies: dict[str, dict[str, Any]] = {}
        self._reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        async for msg in self.ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            data = json.loads(msg.data)
            if data["type"] == "logs":
                self.lines.extend(data["lines"])
            elif "request_id" in data:
                self.replies[data["request_id"]] = data

    async def request(self, request_id: str, timeout: float = 10.0, **fields: Any) -> dict:
        await self.ws.send_json({"request_id": request_id, **fields})
        await wait_until(lambda: request_id in self.replies, timeout)
        return self.replies.pop(request_id)

    async def api(self, request_id: str, method: str, path: str, body: Any = None) -> dict:
        return await self.request(request_id, type="api", method=method, path=path, body=body)

    async def saw(self, text: str, timeout: float = 10.0) -> None:
        await wait_until(lambda: any(text in line for line in self.lines), timeout)

    def close(self) -> None:
        self._reader.cancel()


@contextlib.asynccontextmanager
async def tenant(cloud: Served) -> AsyncIterator[Tenant]:
    async with control_socket(cloud) as ws:
        client = Tenant(ws)
        try:
            yield client
        finally:
            client.close()


async def open_session(client: Tenant, **parameters: Any) -> tuple[BrowserPeer, str]:
    """A test-tone session of ``client``'s, streaming to an aiortc peer."""
    peer = BrowserPeer(video=False)
    await peer.pc.setLocalDescription(await peer.pc.createOffer())
    answer = await client.request("offer", 30, type="offer", sdp=peer.pc.localDescription.sdp,
                                  initialParameters={"pipeline_ids": ["test-tone"], **parameters})
    assert answer["type"] == "answer", answer
    await peer.pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))
    return peer, answer["sessionId"]


@pytest.fixture
async def tenants():
    """A cloud app, connection A with a streaming session, and connection B:
    ``(cloud, a, b, a_session_id)``."""
    async with cloud_server(log_interval=0.05) as cloud, tenant(cloud) as a, tenant(cloud) as b:
        peer, session_id = await open_session(a, volume=7)  # (7: refused, and logged)
        try:
            await peer.wait_audio_frames(5)
            yield cloud, a, b, session_id
        finally:
            await peer.close()


async def test_another_connections_session_is_unknown(tenants):
    cloud, a, b, session_id = tenants
    made_up = await b.request("i0", type="icecandidate", sessionId="0" * 32, candidate=CANDIDATE)
    for rid, candidate in (("i1", CANDIDATE), ("i2", None), ("i3", {"candidate": ""})):
        reply = await b.request(rid, type="icecandidate", sessionId=session_id, candidate=candidate)
        # exactly what a made-up id gets: the id cannot be probed
        assert reply["code"] == made_up["code"] == "UNKNOWN_SESSION" and reply["status"] == 404
        assert reply["error"].replace(session_id, "0" * 32) == made_up["error"]
    assert session_id in cloud.app[STATE_KEY].sessions  # not ended by B's end-of-candidates
    reply = await a.request("i4", type="icecandidate", sessionId=session_id, candidate=None)
    assert reply["type"] == "icecandidate_ack"  # its owner still can


async def test_stats_show_a_connection_only_its_own_sessions(tenants):
    cloud, a, b, session_id = tenants
    own = (await a.api("s1", "GET", "/api/v1/stats"))["data"]
    assert [s["sessionId"] for s in own["sessions"]] == [session_id]
    assert own["sessions"][0]["underruns"] >= 0 and own["rate_limited_messages"] == 0
    other = (await b.api("s2", "GET", "/api/v1/stats"))["data"]
    assert other["sessions"] == [] and other["connections"] == 2
    assert session_id not in json.dumps(other)
    async with httpx.AsyncClient(base_url=cloud.url) as http:  # operators: every session, short
        operator = (await http.get("/api/v1/stats")).json()
        metrics = (await http.get("/metrics")).text
    assert [s["sessionId"] for s in operator["sessions"]] == [session_id[:8]]
    assert session_id not in json.dumps(operator) and session_id not in metrics
    assert operator["rate_limited_messages"] == 0 and operator["refused_sockets"] == 0


async def test_log_lines_reach_only_the_connection_they_were_logged_for(tenants):
    cloud, a, b, session_id = tenants
    log = logging.getLogger("scope_relay.cloud.test")

    async def logged(body: Any) -> dict:
        log.warning("route called by %s", body["who"])
        return {}

    cloud.app[STATE_KEY].router.add_route("/api/v1/test/log", "POST", logged)
    await a.api("l1", "POST", "/api/v1/test/log", {"who": "tenant-a"})
    await b.api("l2", "POST", "/api/v1/test/log", {"who": "tenant-b"})
    # the session refused volume 7 and said so: A's line
    await a.saw("ignored parameter update: volume")
    await a.saw("route called by tenant-a")
    await b.saw("route called by tenant-b")
    log.warning("app-wide fence")  # no connection's: everyone gets it, after all the above
    await a.saw("app-wide fence")
    await b.saw("app-wide fence")
    seen_by_b = "\n".join(b.lines)
    assert "tenant-a" not in seen_by_b and "volume" not in seen_by_b
    assert session_id not in seen_by_b and session_id[:8] not in seen_by_b
    assert "tenant-b" not in "\n".join(a.lines)


async def raw_get(url: str, path: str, headers: dict[str, bytes]) -> tuple[int, dict]:
    """A GET written byte for byte (no client library's header checks): status, JSON body."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        lines = [f"GET {path} HTTP/1.1".encode(), f"Host: {host}".encode(), b"Connection: close"]
        lines += [name.encode() + b": " + value for name, value in headers.items()]
        writer.write(b"\r\n".join(lines) + b"\r\n\r\n")
        response = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body) if body.startswith(b"{") else {}


@pytest.mark.parametrize("header", [
    "Key sécret".encode(), b"Key \xff\xfe\x80", "Bearer 🔑".encode(), b"Key secret\xc3",
    b"", b"Key", b"Key ", b"Bearer   ", b"Basic secret", b"secret", b"Key wrong",
    b"Key secretsecret", b"Key secre", b"\xc3\xa9 secret", b"Key\tsecret",
    b"Key \x01secret",  # (refused by aiohttp's HTTP parser, 400, before any handler runs)
], ids=lambda h: repr(h)[:24])
async def test_any_malformed_authorization_is_a_401_never_a_500(header):
    async with cloud_server(api_key="secret") as cloud:
        for path, extra in (("/api/v1/pipelines", {}), ("/ws", WS_UPGRADE)):
            upgrade = {name: value.encode() for name, value in extra.items()}
            status, body = await raw_get(cloud.url, path, {**upgrade, "Authorization": header})
            if b"\x01" in header:
                assert status == 400, (path, status)
                continue
            assert status == 401, (path, status, body)
            assert body["code"] == "UNAUTHORIZED" and body["error"]
        for good in (b"Key secret", b"bearer secret", b"KEY   secret  "):
            status, _ = await raw_get(cloud.url, "/api/v1/pipelines", {"Authorization": good})
            assert status == 200, good


async def test_a_non_ascii_key_is_compared_as_bytes():
    async with cloud_server(api_key="clé-🔑") as cloud, \
            httpx.AsyncClient(base_url=cloud.url) as http:
        r = await http.get("/api/v1/pipelines", headers={"Authorization": "Key clé-🔑".encode()})
        assert r.status_code == 200
        r = await http.get("/api/v1/pipelines", headers={"Authorization": "Key cle-🔑".encode()})
        assert r.status_code == 401


async def test_sockets_are_capped_per_address(caplog):
    async with cloud_server(max_sockets_per_address=2, log_interval=0.05) as cloud:
        state = cloud.app[STATE_KEY]
        async with tenant(cloud) as a, control_socket(cloud), \
                httpx.AsyncClient(base_url=cloud.url) as http:
            r = await http.get("/ws", headers=WS_UPGRADE)
            assert r.status_code == 429 and r.json()["code"] == "TOO_MANY_CONNECTIONS"
            assert "2 per address" in r.json()["error"]
            async with aiohttp.ClientSession() as session:
                with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                    await session.ws_connect(cloud.ws_url)
                assert refused.value.status == 429
            # the refusal is logged for the operator, never for clients (it names an address)
            logging.getLogger("scope_relay.cloud.test").warning("app-wide fence")
            await a.saw("app-wide fence")
            assert not any("refused" in line for line in a.lines)
            assert any("refused a control socket from 127.0.0.1" in r.getMessage()
                       for r in caplog.records)
        await wait_until(lambda: not state.socket_caps.by_address)  # both handlers ended
        async with control_socket(cloud):  # room again
            pass
        async with httpx.AsyncClient(base_url=cloud.url) as http:
            assert (await http.get("/api/v1/stats")).json()["refused_sockets"] == 2
            metrics = (await http.get("/metrics")).text
        assert 'scope_cloud_refused_sockets_total{cap="address"} 2.0' in metrics


async def test_sockets_are_capped_per_key():
    key = {"Authorization": "Key k3y"}
    async with cloud_server(api_key="k3y", max_sockets_per_key=1,
                            max_sockets_per_address=None) as cloud:
        async with control_socket(cloud, headers=key), \
                httpx.AsyncClient(base_url=cloud.url, headers=key) as http:
            r = await http.get("/ws", headers=WS_UPGRADE)
            assert r.status_code == 429 and "1 per key" in r.json()["error"]
            r = await http.get("/ws", headers={**WS_UPGRADE, "Authorization": "Key nope"})
            assert r.status_code == 401  # the key is checked first
            assert cloud.app[STATE_KEY].socket_caps.refused["key"] == 1
