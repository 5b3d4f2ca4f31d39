"""What the TURN tests share: peers that can only use relayed candidates, and reading them."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import aioice.ice
import av
import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from scope_relay.rtc.ice import rtc_configuration

from .control import open_control
from .peers import media_sections


def forbid_host_candidates(monkeypatch: pytest.MonkeyPatch) -> None:
    """No usable local address on any peer in this process: only relayed candidates exist."""
    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6: [])


def candidate_types(sdp: str) -> set[str]:
    """The ``typ`` of every candidate in ``sdp`` (host, srflx, relay)."""
    return {line.split(" typ ")[1].split()[0] for line in sdp.splitlines()
            if line.startswith("a=candidate:")}


@dataclass
class TurnProbe:
    """A control socket and a recv-only audio peer gathered with only the cloud's ICE servers."""

    ws: aiohttp.ClientWebSocketResponse
    pc: RTCPeerConnection
    servers: list[dict[str, Any]]
    offer_sdp: str
    frames: asyncio.Queue
    tasks: list[asyncio.Task] = field(default_factory=list)

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await self.pc.close()
        await self.ws.close()


@contextlib.asynccontextmanager
async def turn_probe(http: aiohttp.ClientSession, ws_url: str,
                     **ws_options: Any) -> AsyncIterator[TurnProbe]:
    """Ask the cloud for its ICE servers and gather an offer with only those."""
    ws, _ = await open_control(http, ws_url, **ws_options)
    await ws.send_json({"type": "get_ice_servers", "request_id": "i"})
    reply = await ws.receive_json()
    assert reply["type"] != "error", reply
    servers = reply["data"]["iceServers"]
    pc = RTCPeerConnection(rtc_configuration(servers))
    pc.addTransceiver("audio", direction="recvonly")
    probe = TurnProbe(ws, pc, servers, "", asyncio.Queue(maxsize=1000))

    async def pump(track) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                await probe.frames.put(await track.recv())

    pc.on("track", lambda track: probe.tasks.append(asyncio.ensure_future(pump(track))))
    try:
        await pc.setLocalDescription(await pc.createOffer())
        probe.offer_sdp = pc.localDescription.sdp
        yield probe
    finally:
        await probe.close()


async def relayed_test_tone(probe: TurnProbe) -> av.AudioFrame:
    """Offer test-tone with the probe's (relay-only) candidates; the answer must be relay-only
    too, and 25 audio frames must arrive over the relayed pair. Returns the last one."""
    await probe.ws.send_json({"type": "offer", "request_id": "o", "sdp": probe.offer_sdp,
                              "initialParameters": {"pipeline_ids": ["test-tone"]}})
    answer = await asyncio.wait_for(probe.ws.receive_json(), 20)
    assert answer["type"] == "answer", answer
    assert candidate_types(answer["sdp"]) == {"relay"}
    assert media_sections(answer["sdp"])["audio"] == "sendonly"
    await probe.pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))
    for _ in range(25):
        frame = await asyncio.wait_for(probe.frames.get(), 20)
    return frame
