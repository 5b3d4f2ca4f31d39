"""TURN through a real coturn on 127.0.0.1, with the REST credentials our cloud hands out."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import tempfile

import aiohttp
import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from scope_relay.cloud.ice_servers import IceServerConfig
from scope_relay.rtc.ice import rtc_configuration

from helpers.control import open_control
from helpers.peers import media_sections
from helpers.servers import cloud_server
from helpers.turn import candidate_types, forbid_host_candidates

pytestmark = [
    pytest.mark.turn,
    pytest.mark.skipif(shutil.which("turnserver") is None,
                       reason="coturn not installed (scripts/setup.sh --system)"),
]
SECRET = "turn-test-secret"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def coturn():
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        log = open(os.path.join(tmp, "turn.log"), "w")
        proc = subprocess.Popen(
            ["turnserver", "-c", "/dev/null", "--listening-ip=127.0.0.1", "--relay-ip=127.0.0.1",
             f"--listening-port={port}", "--use-auth-secret", f"--static-auth-secret={SECRET}",
             "--realm=scope.test", "--allow-loopback-peers", "--no-cli", "--no-tls", "--no-dtls",
             "--log-file=stdout", "--simple-log", f"--pidfile={tmp}/turn.pid"],
            stdout=log, stderr=subprocess.STDOUT)
        try:
            yield port
        finally:
            proc.terminate()
            proc.wait(10)
            log.close()


@pytest.fixture
def no_host_candidates(monkeypatch):
    forbid_host_candidates(monkeypatch)


async def connect_through(http: aiohttp.ClientSession, cloud):
    """Control socket, ICE servers from the cloud, and an offer gathered with them."""
    ws, _ = await open_control(http, cloud.ws_url)
    await ws.send_json({"type": "get_ice_servers", "request_id": "i"})
    servers = (await ws.receive_json())["data"]["iceServers"]
    pc = RTCPeerConnection(rtc_configuration(servers))
    pc.addTransceiver("audio", direction="recvonly")
    frames: asyncio.Queue = asyncio.Queue(maxsize=1000)

    @pc.on("track")
    def on_track(track):
        async def pump():
            try:
                while True:
                    await frames.put(await track.recv())
            except MediaStreamError:
                pass
        asyncio.ensure_future(pump())

    await pc.setLocalDescription(await pc.createOffer())
    return ws, pc, servers, pc.localDescription.sdp, frames


async def test_relay_only_media_flows_through_coturn(coturn, no_host_candidates):
    ice = IceServerConfig(turn_urls=[f"turn:127.0.0.1:{coturn}?transport=udp"],
                          turn_secret=SECRET)
    async with cloud_server(ice=ice) as cloud, aiohttp.ClientSession() as http:
        ws, pc, servers, offer_sdp, frames = await connect_through(http, cloud)
        try:
            username = servers[0]["username"]
            assert username.split(":")[0].isdigit()  # <expiry>:<user>
            assert candidate_types(offer_sdp) == {"relay"}
            await ws.send_json({"type": "offer", "request_id": "o", "sdp": offer_sdp,
                                "initialParameters": {"pipeline_ids": ["test-tone"]}})
            answer = await asyncio.wait_for(ws.receive_json(), 20)
            assert answer["type"] == "answer", answer
            assert candidate_types(answer["sdp"]) == {"relay"}
            assert media_sections(answer["sdp"])["audio"] == "sendonly"
            await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))
            for _ in range(25):  # audio arrives over the relayed pair
                frame = await asyncio.wait_for(frames.get(), 20)
            assert frame.sample_rate == 48_000
        finally:
            await pc.close()
            await ws.close()


async def test_wrong_secret_gives_no_relay_candidates(coturn, no_host_candidates):
    ice = IceServerConfig(turn_urls=[f"turn:127.0.0.1:{coturn}?transport=udp"],
                          turn_secret="wrong")
    async with cloud_server(ice=ice) as cloud, aiohttp.ClientSession() as http:
        ws, pc, servers, offer_sdp, frames = await connect_through(http, cloud)
        try:
            # coturn refuses silently: no relayed candidate, hence nothing to connect over
            assert candidate_types(offer_sdp) == set()
        finally:
            await pc.close()
            await ws.close()
