"""A relay served beyond this machine obeys only the holder of its token (or of a share
link, as a viewer).

"The LAN" here is 127.0.0.0/8, so traffic never leaves the box: the relay listens on
127.0.0.2 (not a loopback name to it: a token is made), and LAN neighbours are clients that
bind 127.0.0.3 or 127.0.0.4 as their source address. The relay counts only 127.0.0.1 and
::1 as its own machine; that is also exact for real clients, since Linux sends every
connection to 127.0.0.0/8 from 127.0.0.1 unless the client binds another address.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from aiortc import RTCSessionDescription

from scope_relay.cloud.app import STATE_KEY
from scope_relay.local.cloud_link.target import CloudTarget
from scope_relay.local.server import RELAY_KEY, RelayConfig, create_relay_app

from helpers.peers import BrowserPeer
from helpers.processes import relay_process
from helpers.servers import SHUTDOWN_TIMEOUT, Served, cloud_server, serve
from helpers.waiting import wait_until

LAN_ADDRESS = "127.0.0.2"
NEIGHBOUR = "127.0.0.3"
OTHER_NEIGHBOUR = "127.0.0.4"


@contextlib.asynccontextmanager
async def lan_relay(cloud: Served, host: str = LAN_ADDRESS, **config: Any) -> AsyncIterator[Served]:
    """The relay as ``--host <host>`` serves it: bound there, told it listens there."""
    app = create_relay_app(RelayConfig(CloudTarget(cloud.ws_url), loopback_ice=True,
                                       listen_host=host, **config))
    async with serve(app, host=host, shutdown_timeout=SHUTDOWN_TIMEOUT) as served:
        yield served


def client(relay: Served, source: str | None = NEIGHBOUR, **options: Any) -> httpx.AsyncClient:
    """An HTTP client connecting from ``source`` (None: this machine, 127.0.0.1)."""
    transport = httpx.AsyncHTTPTransport(local_address=source) if source else None
    return httpx.AsyncClient(base_url=relay.url, timeout=60, transport=transport, **options)


def token_of(relay: Served) -> str:
    token = relay.app[RELAY_KEY].config.token
    assert token
    return token


async def offer_sdp(peer: BrowserPeer) -> str:
    await peer.pc.setLocalDescription(await peer.pc.createOffer())
    return peer.pc.localDescription.sdp


async def start_session(http: httpx.AsyncClient, peer: BrowserPeer,
                        params: dict[str, Any]) -> httpx.Response:
    """The page's offer through ``http``; the answer applied when it is a 200."""
    response = await http.post("/api/v1/webrtc/offer", json={
        "sdp": await offer_sdp(peer), "type": "offer", "initialParameters": params})
    if response.status_code == 200:
        peer.session_id = response.json()["sessionId"]
        await peer.pc.setRemoteDescription(RTCSessionDescription(response.json()["sdp"], "answer"))
    return response


def assert_unauthorised(response: httpx.Response, what: str) -> None:
    assert response.status_code == 401, (what, response.status_code, response.text)
    body = response.json()
    assert body["code"] == "UNAUTHORIZED" and body["error"], (what, body)
    assert response.headers["www-authenticate"].startswith("Bearer"), what


async def refused_everything(http: httpx.AsyncClient, peer: BrowserPeer, label: str) -> None:
    """Stats, /metrics, the pipeline list and load, an offer and a recording: all 401."""
    for path in ("/api/v1/stats", "/metrics", "/api/v1/pipelines", "/api/v1/cloud/status",
                 "/api/v1/recordings/x", "/no/such/route"):
        assert_unauthorised(await http.get(path), f"{label} GET {path}")
    assert_unauthorised(await http.post("/api/v1/pipeline/load",
                                        json={"pipeline_ids": ["test-tone"]}), f"{label} load")
    assert_unauthorised(await start_session(http, peer, {"pipeline_ids": ["test-tone"]}),
                        f"{label} offer")
    assert_unauthorised(await http.post("/api/v1/recordings", json={"sessionId": "x"}),
                        f"{label} recording")


async def test_lan_neighbours_without_the_token_are_refused():
    async with cloud_server() as cloud, lan_relay(cloud) as relay:
        token = token_of(relay)
        peer = BrowserPeer(video=False)
        try:
            async with client(relay) as http:
                await refused_everything(http, peer, "no token")
            wrong = token[:-1] + ("A" if token[-1] != "A" else "B")  # one character off
            for bad in (wrong, token[:8], token + "x", "", "é"):
                if bad.isascii() and bad:  # (httpx sends no empty or non-ASCII header)
                    async with client(relay, headers={"Authorization": f"Bearer {bad}"}) as http:
                        assert_unauthorised(await http.get("/api/v1/stats"), f"bearer {bad!r}")
                async with client(relay) as http:
                    r = await http.get("/", params={"token": bad})
                    assert_unauthorised(r, f"?token={bad!r}")
                    assert "set-cookie" not in r.headers
                    if bad.isascii():
                        http.cookies.set("scope-relay-token-" + relay.url.rsplit(":", 1)[1], bad)
                        assert_unauthorised(await http.get("/metrics"), f"cookie {bad!r}")
            async with client(relay, headers={"Authorization": f"Key {token}"}) as http:
                assert_unauthorised(await http.get("/api/v1/stats"), "another scheme")
        finally:
            await peer.close()
        assert cloud.app[STATE_KEY].manager.state.status == "not_loaded"  # nothing was loaded
        assert not relay.app[RELAY_KEY].sessions and not cloud.app[STATE_KEY].sessions


async def test_the_token_url_gives_a_cookie_and_the_bearer_header_works():
    async with cloud_server() as cloud, lan_relay(cloud) as relay:
        token = token_of(relay)
        port = relay.url.rsplit(":", 1)[1]
        peer = BrowserPeer(video=False)
        try:
            async with client(relay) as http:
                r = await http.get("/", params={"token": token, "tab": "2"})
                assert r.status_code == 303 and r.headers["location"] == "/?tab=2", r.headers
                cookie = r.headers["set-cookie"]
                assert cookie.startswith(f"scope-relay-token-{port}=") and token not in cookie
                for attribute in ("HttpOnly", "SameSite=Strict", "Path=/"):
                    assert attribute.lower() in cookie.lower(), cookie
                assert r.headers["cache-control"] == "no-store"
                # with the cookie (httpx keeps it like a browser): everything works
                page = await http.get("/")
                assert page.status_code == 200 and "<html" in page.text
                assert (await http.get("/api/v1/stats")).status_code == 200
                assert "scope_relay_sessions" in (await http.get("/metrics")).text
                load = await http.post("/api/v1/pipeline/load", json={"pipeline_ids": ["test-tone"]})
                assert load.status_code == 200, load.text
                answer = await start_session(http, peer, {"pipeline_ids": ["test-tone"]})
                assert answer.status_code == 200, answer.text
                await peer.wait_audio_frames(10)
                recording = await http.post("/api/v1/recordings", json={"sessionId": peer.session_id})
                assert recording.status_code == 200, recording.text
                recording_id = recording.json()["recordingId"]
            async with client(relay, OTHER_NEIGHBOUR,
                              headers={"Authorization": f"bearer {token}"}) as http:
                listed = (await http.get("/api/v1/stats")).json()["sessions"]
                assert [s["session"] for s in listed] == [peer.session_id[:8]]
                assert (await http.get("/metrics")).status_code == 200
                stopped = await http.delete(f"/api/v1/recordings/{recording_id}")
                assert stopped.status_code == 200, stopped.text
        finally:
            await peer.close()


async def test_the_token_leaves_the_url_and_the_redirect_stays_on_the_relay():
    """``//evil.example/?token=...`` must not redirect to another host."""
    async with cloud_server() as cloud, lan_relay(cloud) as relay:
        token = token_of(relay)
        port = int(relay.url.rsplit(":", 1)[1])
        reader, writer = await asyncio.open_connection(LAN_ADDRESS, port,
                                                       local_addr=(NEIGHBOUR, 0))
        try:
            writer.write(f"GET //evil.example/x?token={token}&a=1 HTTP/1.1\r\n"
                         f"Host: {LAN_ADDRESS}:{port}\r\nConnection: close\r\n\r\n".encode())
            head = (await asyncio.wait_for(reader.read(), 30)).decode(errors="replace")
        finally:
            writer.close()
        assert head.startswith("HTTP/1.1 303"), head
        assert "\r\nLocation: /evil.example/x?a=1\r\n" in head, head


async def test_this_machine_needs_no_token_unless_required():
    async with cloud_server() as cloud:
        async with lan_relay(cloud) as relay, client(relay, source=None) as http:
            assert (await http.get("/api/v1/stats")).status_code == 200  # from 127.0.0.1
            assert (await http.get("/metrics")).status_code == 200
        async with lan_relay(cloud, "127.0.0.1") as relay:
            assert relay.app[RELAY_KEY].config.token is None  # loopback only: no token
        async with lan_relay(cloud, "127.0.0.1", require_token=True, token="t0ken") as relay:
            async with client(relay, source=None) as http:
                assert_unauthorised(await http.get("/api/v1/stats"), "required locally")
            async with client(relay, source=None,
                              headers={"Authorization": "Bearer t0ken"}) as http:
                assert (await http.get("/api/v1/stats")).status_code == 200
        with pytest.raises(ValueError, match="empty"):
            create_relay_app(RelayConfig(CloudTarget(cloud.ws_url), token=""))


async def test_a_share_link_viewer_gets_in_with_viewer_rights_only():
    async with cloud_server() as cloud, lan_relay(cloud) as relay:
        token = token_of(relay)
        owner, watcher = BrowserPeer(video=False), BrowserPeer(video=False)
        try:
            async with client(relay, headers={"Authorization": f"Bearer {token}"}) as http:
                answer = await start_session(http, owner, {"pipeline_ids": ["test-tone"]})
                assert answer.status_code == 200, answer.text
                share = answer.json()["shareToken"]
                await owner.wait_audio_frames(5)
            async with client(relay, OTHER_NEIGHBOUR) as http:  # no relay token at all
                page = await http.get("/viewer")
                assert page.status_code == 200 and "viewer.js" in page.text
                assert (await http.get("/static/js/viewer.js")).status_code == 200
                joined = await http.post("/api/v1/webrtc/viewer", json={
                    "sdp": await offer_sdp(watcher), "type": "offer", "shareToken": share})
                assert joined.status_code == 200, joined.text
                viewer_id = joined.json()["viewerId"]
                await watcher.pc.setRemoteDescription(
                    RTCSessionDescription(joined.json()["sdp"], "answer"))
                await watcher.wait_audio_frames(10)
                assert (await http.get(f"/api/v1/webrtc/viewer/{viewer_id}")).status_code == 200
                # and nothing but watching
                intruder = BrowserPeer(video=False)
                try:
                    await refused_everything(http, intruder, "viewer")
                finally:
                    await intruder.close()
                assert_unauthorised(await http.get(f"/api/v1/webrtc/offer/{owner.session_id}"),
                                    "owner's figures")
                assert_unauthorised(await http.delete(f"/api/v1/webrtc/offer/{owner.session_id}"),
                                    "ending the owner's session")
                wrong = await http.post("/api/v1/webrtc/viewer", json={
                    "sdp": "v=0", "type": "offer", "shareToken": share + "x"})
                assert wrong.status_code == 404
            await owner.wait_audio_frames(10)  # the owner streams on
            await wait_until(lambda: list(relay.app[RELAY_KEY].sessions) == [owner.session_id])
        finally:
            await watcher.close()
            await owner.close()


async def test_the_cli_prints_the_token_url_once(monkeypatch):
    """``scope-relay local --host 127.0.0.2``: one line carries the token (the URL to open);
    requests with it, logged by aiohttp's access log (at DEBUG), show ``<token>`` instead."""
    async with cloud_server() as cloud:
        stand_in = SimpleNamespace(ws_url=cloud.ws_url)  # relay_process needs only its URL
        async with relay_process(stand_in, "--host", LAN_ADDRESS, "--log-level", "debug") as relay:
            url = urlsplit(relay.url)
            assert url.hostname == LAN_ADDRESS and url.path == "/" and url.query.startswith("token=")
            token = url.query.removeprefix("token=")
            assert len(token) >= 43  # 256 bits
            assert not any("on this machine" in line for line in relay.output)  # not on .0.1
            base = f"http://{url.netloc}"
            async with httpx.AsyncClient(base_url=base, timeout=60, transport=httpx.AsyncHTTPTransport(
                    local_address=NEIGHBOUR)) as http:
                assert_unauthorised(await http.get("/api/v1/stats"), "cli, no token")
                assert (await http.get(relay.url)).status_code == 303
                assert (await http.get("/api/v1/stats")).status_code == 200
                await wait_until(lambda: any("/?token=<token>" in line for line in relay.output), 30)
            assert sum(token in line for line in relay.output) == 1, relay.output
        monkeypatch.setenv("SCOPE_RELAY_TOKEN", "from-the-environment")
        async with relay_process(stand_in, "--require-token") as relay:
            assert relay.url.endswith("/?token=from-the-environment"), relay.url
            assert not any("on this machine" in line for line in relay.output)
            async with httpx.AsyncClient(timeout=60) as http:  # from 127.0.0.1
                base = relay.url.split("/?")[0]
                assert_unauthorised(await http.get(f"{base}/api/v1/stats"), "cli, required")
                r = await http.get(f"{base}/api/v1/stats",
                                   headers={"Authorization": "Bearer from-the-environment"})
                assert r.status_code == 200
