"""Only the user's own page drives the relay: what other web pages (cross-origin requests,
DNS rebinding) send is refused, and the user's session is untouched."""

from __future__ import annotations

from urllib.parse import urlsplit

import httpx

from scope_relay.cloud.app import STATE_KEY
from scope_relay.local.server import RELAY_KEY

from helpers.peers import connected
from helpers.servers import cloud_server, relay_server

EVIL = "http://evil.example"


def port_of(url: str) -> int:
    port = urlsplit(url).port
    assert port is not None
    return port


async def test_cross_origin_simple_requests_are_refused(stack):
    cloud, relay = stack
    async with httpx.AsyncClient(base_url=relay.url, timeout=30) as http:
        # what `fetch(url, {method: "POST", mode: "no-cors", body: text})` sends
        for path, body in (("/api/v1/pipeline/load", '{"pipeline_ids": ["test-tone"]}'),
                           ("/api/v1/webrtc/offer", '{"sdp": "v=0", "type": "offer"}')):
            r = await http.post(path, content=body,
                                headers={"Content-Type": "text/plain", "Origin": EVIL})
            assert (r.status_code, r.json()["code"]) == (403, "FORBIDDEN_ORIGIN"), r.text
            r = await http.post(path, content=body, headers={"Content-Type": "text/plain"})
            assert (r.status_code, r.json()["code"]) == (415, "UNSUPPORTED_MEDIA_TYPE"), r.text
            # and JSON from another origin (a page's CORS fetch) is refused as well
            r = await http.post(path, content=body, headers={
                "Content-Type": "application/json", "Origin": EVIL})
            assert r.status_code == 403
        for method in ("DELETE", "PATCH"):
            r = await http.request(method, "/api/v1/webrtc/offer/x", headers={"Origin": "null"})
            assert r.status_code == 403
        assert "access-control-allow-origin" not in {k.lower() for k in r.headers}
    assert cloud.app[STATE_KEY].manager.state.status == "not_loaded"  # nothing was loaded
    assert not cloud.app[STATE_KEY].sessions and not relay.app[RELAY_KEY].sessions


async def test_foreign_host_is_refused_everywhere(stack):
    _, relay = stack
    port = port_of(relay.url)
    async with httpx.AsyncClient(base_url=relay.url, timeout=30) as http:
        for host in (f"evil.example:{port}", "evil.example", f"127.0.0.1:{port + 1}", "",
                     f"[::1:{port}"):
            for path in ("/", "/api/v1/stats", "/api/v1/pipelines", "/metrics"):
                r = await http.get(path, headers={"Host": host})
                assert (r.status_code, r.json()["code"]) == (403, "FORBIDDEN_HOST"), (host, path)
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"LOCALHOST:{port}"):
            r = await http.get("/api/v1/cloud/status", headers={
                "Host": host, "Origin": f"http://{host.lower()}"})
            assert r.status_code == 200, (host, r.text)


async def test_another_client_cannot_end_or_read_the_users_session(stack):
    _, relay = stack
    async with connected(relay.url, {"pipeline_ids": ["test-tone"]}, video=False) as peer, \
            httpx.AsyncClient(base_url=relay.url, timeout=30) as http:
        await peer.wait_audio_frames(10)
        (listed,) = (await http.get("/api/v1/stats")).json()["sessions"]
        assert "sessionId" not in listed and listed["session"] == peer.session_id[:8]
        for guess in (listed["session"], listed["session"] + "0" * 24):
            assert (await http.delete(f"/api/v1/webrtc/offer/{guess}")).status_code == 404
            assert (await http.get(f"/api/v1/webrtc/offer/{guess}")).status_code == 404
        mine = (await http.get(f"/api/v1/webrtc/offer/{peer.session_id}")).json()
        assert mine["sessionId"] == peer.session_id  # the creator reads its own figures
        before = len(peer.received.audio)
        await peer.wait_audio_frames(10)  # still streaming
        assert len(peer.received.audio) > before
        assert list(relay.app[RELAY_KEY].sessions) == [peer.session_id]


async def test_allowed_hosts_and_origins_are_configurable():
    async with cloud_server() as cloud, relay_server(
            cloud, allow_hosts=["relay.lan"], allow_origins=["http://localhost:5173"]) as relay:
        port = port_of(relay.url)
        async with httpx.AsyncClient(base_url=relay.url, timeout=30) as http:
            r = await http.get("/api/v1/cloud/status", headers={"Host": f"relay.lan:{port}"})
            assert r.status_code == 200
            r = await http.get("/api/v1/cloud/status", headers={"Origin": "http://localhost:5173"})
            assert r.status_code == 200
            r = await http.get("/api/v1/cloud/status", headers={"Origin": "http://localhost:5174"})
            assert r.status_code == 403
