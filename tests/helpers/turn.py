"""What the TURN tests share: peers that can only use relayed candidates, and reading them;
network namespaces to place coturn and the addresses it must or must not relay to."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import itertools
import os
import shutil
import subprocess
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiohttp
import aioice.ice
import av
import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from scope_relay.rtc.ice import rtc_configuration

from .control import open_control
from .peers import media_sections

T = TypeVar("T")


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


# --- coturn in a network namespace of its own ------------------------------------------------

_namespaces = itertools.count()
CLONE_NEWNET = 0x40000000


def namespaces_unavailable() -> str | None:
    """Why this machine cannot make network namespaces for a test (None: it can)."""
    if shutil.which("ip") is None:
        return "iproute2 (ip) not installed"
    if os.geteuid() != 0:
        return "network namespaces need root"
    return None


@contextlib.contextmanager
def network_namespace(addresses: Sequence[str]) -> Iterator[str]:
    """A network namespace named for this process, its loopback up with ``addresses`` (each a
    /32 on ``lo``); deleted at the end, whatever still runs in it is cut off."""
    name = f"scope-turn-{os.getpid()}-{next(_namespaces)}"
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True, capture_output=True)
        for address in addresses:
            subprocess.run(["ip", "-n", name, "addr", "add", f"{address}/32", "dev", "lo"],
                           check=True, capture_output=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


def run_in_namespace(name: str, work: Callable[[], T]) -> T:
    """``work()`` on a thread of its own that has entered namespace ``name`` (setns applies
    to the calling thread only), so every socket it opens lives there; returns its result."""
    outcome: dict[str, Any] = {}

    def thread() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
            try:
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), f"setns({name})")
            finally:
                os.close(fd)
            outcome["result"] = work()
        except BaseException as exc:  # handed to the caller
            outcome["error"] = exc

    worker = threading.Thread(target=thread, name=f"netns-{name}")
    worker.start()
    worker.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]
