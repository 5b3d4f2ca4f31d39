"""Extra viewers of one session: a share link, receive-only peers, one cloud session."""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import numpy as np
from aiortc import RTCSessionDescription

from scope_relay.cloud.app import STATE_KEY
from scope_relay.local.server import RELAY_KEY
from scope_relay.local.sessions.viewers import CONNECT_TIMEOUT
from scope_relay.rtc.aiortc_internals import rtp_origin

from helpers.peers import BrowserPeer, connected
from helpers.servers import cloud_server, relay_server
from helpers.waiting import wait_until

#: Flashes must reach every peer within this of each other (the issue's bound), judged by
#: when the flash frame's first RTP packet reached each peer: the typical (median) flash,
#: and each peer's own typical lag behind the earliest. Each peer has its own VP8 encoder,
#: run in aiortc's thread pool, so on a 2-core box shared with other test runs the last
#: of four encodes of one frame can finish well after the first: single flashes get only
#: a sanity bound. Measured here (load average 6 on 2 cores): median 2-12 ms, single
#: flashes up to 80 ms; on an idle box all under 10 ms.
SYNC_BOUND = 0.020
WORST_BOUND = 0.150
#: At the receivers' recv(), after aiortc's jitter buffer (it completes a frame when the
#: next one starts) and a VP8 decoder thread per peer, all four peers in this process: a
#: generous bound on the typical flash.
RECV_BOUND = 0.060


class PacketArrivals:
    """When the first RTP packet of each video frame reached a peer, before any jitter
    buffer or decoder: what the relay's sending decides, apart from the receiver's work."""

    def __init__(self, receiver: Any):
        self.receiver = receiver
        self.first: dict[int, float] = {}  # RTP timestamp -> arrival
        handle = receiver._handle_rtp_packet

        async def seen(packet: Any, arrival_time_ms: int) -> None:
            self.first.setdefault(packet.timestamp, time.monotonic())
            await handle(packet, arrival_time_ms)

        receiver._handle_rtp_packet = seen

    def arrival(self, pts: int) -> float:
        origin = rtp_origin(self.receiver)
        assert origin is not None
        return self.first.get((origin + pts) % 2**32, float("nan"))


async def join_as_viewer(peer: BrowserPeer, relay_url: str, token: str) -> httpx.Response:
    """POST the peer's offer to the viewer route with ``token``; apply the answer if 200."""
    await peer.pc.setLocalDescription(await peer.pc.createOffer())
    async with httpx.AsyncClient(base_url=relay_url, timeout=60) as http:
        response = await http.post("/api/v1/webrtc/viewer", json={
            "sdp": peer.pc.localDescription.sdp, "type": "offer", "shareToken": token})
    if response.status_code == 200:
        data = response.json()
        peer.session_id = data["viewerId"]
        await peer.pc.setRemoteDescription(RTCSessionDescription(data["sdp"], "answer"))
    return response


@contextlib.asynccontextmanager
async def viewer(relay_url: str, token: str) -> AsyncIterator[BrowserPeer]:
    peer = BrowserPeer()
    peer.packets = PacketArrivals(peer.taps["video"].receiver)  # type: ignore[attr-defined]
    try:
        response = await join_as_viewer(peer, relay_url, token)
        assert response.status_code == 200, response.text
        yield peer
    finally:
        await peer.close()


def flashes(peer: BrowserPeer, since: float) -> tuple[list[float], list[float]]:
    """(first RTP packet's arrival, arrival at recv()) of every flash frame received
    after ``since`` (monotonic)."""
    video, bright = list(peer.received.video), list(peer.received.video_brightness)
    packets, frames = [], []
    for i in range(1, min(len(video), len(bright))):
        pts, level = bright[i]
        if level > 128 >= bright[i - 1][1] and video[i][0] > since:
            packets.append(peer.packets.arrival(pts))  # type: ignore[attr-defined]
            frames.append(video[i][0])
    return packets, frames


def matched(per_peer: list[list[float]]) -> np.ndarray:
    """``(flashes, peers)`` times: each flash the first peer saw, with the nearest flash of
    every other peer (flashes are 1 s apart)."""
    rows = []
    for t in per_peer[0]:
        row = [min(times, key=lambda x: abs(x - t)) for times in per_peer]
        if all(abs(x - t) < 0.5 for x in row):
            rows.append(row)
    return np.array(rows)


async def test_three_viewers_share_one_cloud_session_in_sync():
    async with cloud_server() as cloud, relay_server(cloud, max_viewers=3) as relay, \
            connected(relay.url, {"pipeline_ids": ["av-sync"]}) as owner:
        owner.packets = PacketArrivals(owner.taps["video"].receiver)
        async with httpx.AsyncClient(base_url=relay.url) as http:
            mine = (await http.get(f"/api/v1/webrtc/offer/{owner.session_id}")).json()
        token = mine["shareToken"]
        assert token and token not in owner.session_id and owner.session_id not in token
        assert mine["shareUrl"].endswith(f"/viewer#{token}")
        async with contextlib.AsyncExitStack() as stack:
            viewers = [await stack.enter_async_context(viewer(relay.url, token))
                       for _ in range(3)]
            peers = [owner, *viewers]
            # the cap: a fourth viewer is refused, clearly
            extra = BrowserPeer()
            try:
                refused = await join_as_viewer(extra, relay.url, token)
            finally:
                await extra.close()
            assert refused.status_code == 429, refused.text
            assert refused.json()["code"] == "TOO_MANY_VIEWERS"

            # judged after a warm-up: new encoders, first keyframes, a loaded box
            await asyncio.gather(*(p.wait_video_frames(48, timeout=40) for p in peers))
            warm = time.monotonic()
            await asyncio.gather(*(p.wait_video_frames(120, timeout=40) for p in peers),
                                 *(p.wait_audio_frames(150, timeout=40) for p in peers))
            # a viewer cannot change parameters: refused and counted, never forwarded
            await viewers[0].send_parameters({"volume": 0.1})
            (session,) = relay.app[RELAY_KEY].sessions.values()
            audience = session.audience
            assert audience is not None
            await wait_until(lambda: any(v.parameters_refused for v in audience.viewers.values()))
            assert "volume" not in session.parameter_state

            # one cloud session, one generation
            assert len(cloud.app[STATE_KEY].sessions) == 1
            async with httpx.AsyncClient(base_url=cloud.url) as http:
                assert len((await http.get("/api/v1/stats")).json()["sessions"]) == 1
            async with httpx.AsyncClient(base_url=relay.url) as http:
                stats = (await http.get("/api/v1/stats")).json()
            (listed,) = stats["sessions"]
            assert listed["viewers"] == 3 and listed["viewers_refused"] == 1
            assert "shareToken" not in listed  # the link is for its owner only

            per_peer = [flashes(p, since=warm) for p in peers]
            packets = matched([p for p, _ in per_peer])
            frames = matched([f for _, f in per_peer])
            assert len(packets) >= 3 and len(frames) >= 3, per_peer
            spread = packets.max(axis=1) - packets.min(axis=1)
            lag = np.median(packets - packets.min(axis=1, keepdims=True), axis=0)
            recv_spread = frames.max(axis=1) - frames.min(axis=1)
            print(f"flash spread over 4 peers (ms): first packet {np.round(spread * 1000, 1)}, "
                  f"each peer's median lag {np.round(lag * 1000, 1)}, "
                  f"at recv() {np.round(recv_spread * 1000, 1)}")
            assert float(np.median(spread)) < SYNC_BOUND, spread
            assert lag.max() < SYNC_BOUND, lag  # no peer is systematically behind
            assert spread.max() < WORST_BOUND, spread
            assert float(np.median(recv_spread)) < RECV_BOUND, recv_spread
            for p in peers:  # every peer got the whole stream, not a share of it
                assert abs(len(p.received.video) - len(owner.received.video)) < 24


async def test_bad_share_token_is_a_clear_json_error(stack):
    _, relay = stack
    async with connected(relay.url, {"pipeline_ids": ["test-tone"]}, video=False):
        peer = BrowserPeer(video=False)
        try:
            response = await join_as_viewer(peer, relay.url, "not-the-token")
            assert response.status_code == 404
            assert response.json()["code"] == "UNKNOWN_SHARE", response.text
            async with httpx.AsyncClient(base_url=relay.url) as http:
                missing = await http.post("/api/v1/webrtc/viewer", json={"sdp": "v=0"})
            assert missing.status_code == 400 and missing.json()["code"] == "INVALID_MESSAGE"
        finally:
            await peer.close()


async def test_viewers_end_with_the_owner_session(stack):
    _, relay = stack
    owner = BrowserPeer(video=False)
    try:
        response = await owner.connect_relay(relay.url, {"pipeline_ids": ["test-tone"],
                                                         "interval": 0.5})
        assert response.status_code == 200, response.text
        token = response.json()["shareToken"]
        async with viewer(relay.url, token) as first, viewer(relay.url, token) as second:
            await asyncio.gather(first.wait_audio_frames(25), second.wait_audio_frames(25))
            (session,) = relay.app[RELAY_KEY].sessions.values()
            assert session.audience is not None
            joined = list(session.audience.viewers.values())
            assert len(joined) == 2
            async with httpx.AsyncClient(base_url=relay.url) as http:
                assert (await http.get(f"/api/v1/webrtc/viewer/{first.session_id}")).status_code == 200
                await http.delete(f"/api/v1/webrtc/offer/{owner.session_id}")
                await asyncio.gather(*(asyncio.wait_for(v.closed.wait(), 10) for v in joined))
                assert all(v.pc.connectionState == "closed" for v in joined)
                gone = await http.get(f"/api/v1/webrtc/viewer/{first.session_id}")
                assert gone.status_code == 404 and gone.json()["code"] == "UNKNOWN_SESSION"
                # the link dies with the session
                late = BrowserPeer(video=False)
                try:
                    assert (await join_as_viewer(late, relay.url, token)).status_code == 404
                finally:
                    await late.close()
    finally:
        await owner.close()


async def test_a_viewer_leaving_does_not_disturb_the_owner(stack):
    _, relay = stack
    async with connected(relay.url, {"pipeline_ids": ["test-tone"]}, video=False) as owner:
        async with httpx.AsyncClient(base_url=relay.url) as http:
            token = (await http.get(f"/api/v1/webrtc/offer/{owner.session_id}")).json()["shareToken"]
        async with viewer(relay.url, token) as watcher:
            await watcher.wait_audio_frames(25)
            async with httpx.AsyncClient(base_url=relay.url) as http:
                closed = await http.delete(f"/api/v1/webrtc/viewer/{watcher.session_id}")
            assert closed.json() == {"closed": True}
        await owner.wait_audio_frames(50)  # the owner's stream goes on
        (session,) = relay.app[RELAY_KEY].sessions.values()
        assert session.audience is not None and not session.audience.viewers
        assert session.audience.fanout.subscribers == 1  # the owner's own audio


async def test_ghost_viewers_release_their_slots(stack):
    """8 viewer offers that never connect (their candidates lead to a socket that reads
    nothing) fill the link; each is let go within CONNECT_TIMEOUT (10 s), counted, and a
    real viewer then gets in."""
    assert CONNECT_TIMEOUT <= 10
    _, relay = stack
    async with connected(relay.url, {"pipeline_ids": ["test-tone"]}, video=False) as owner:
        async with httpx.AsyncClient(base_url=relay.url, timeout=60) as http:
            token = (await http.get(f"/api/v1/webrtc/offer/{owner.session_id}")).json()["shareToken"]
            template = BrowserPeer(video=False)
            try:
                await template.pc.setLocalDescription(await template.pc.createOffer())
                sdp = template.pc.localDescription.sdp
            finally:
                await template.close()
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as blackhole:
                blackhole.bind(("127.0.0.1", 0))
                port = blackhole.getsockname()[1]
                ghost_sdp = re.sub(r"(a=candidate:\S+ \d+ udp \d+) \S+ \d+",
                                   rf"\1 127.0.0.1 {port}", sdp)
                assert f"127.0.0.1 {port} typ host" in ghost_sdp
                started = time.monotonic()
                for _ in range(8):
                    ghost = await http.post("/api/v1/webrtc/viewer", json={
                        "sdp": ghost_sdp, "type": "offer", "shareToken": token})
                    assert ghost.status_code == 200, ghost.text
                (session,) = relay.app[RELAY_KEY].sessions.values()
                audience = session.audience
                assert audience is not None and len(audience.viewers) == 8
                locked = BrowserPeer(video=False)  # the link is full for now
                try:
                    assert (await join_as_viewer(locked, relay.url, token)).status_code == 429
                finally:
                    await locked.close()
                await wait_until(lambda: not audience.viewers, timeout=CONNECT_TIMEOUT + 10)
                freed = time.monotonic() - started
            print(f"8 ghost viewers let go {freed:.1f} s after their offers")
            assert freed < CONNECT_TIMEOUT + 5
            stats = (await http.get("/api/v1/stats")).json()["sessions"][0]
            assert stats["viewers_never_connected"] == 8 and stats["viewers_refused"] == 1
            async with viewer(relay.url, token) as watcher:  # a real viewer gets in
                await watcher.wait_audio_frames(25)
                assert len(audience.viewers) == 1
        await owner.wait_audio_frames(25)
        assert audience.never_connected == 8  # the real viewer did connect
