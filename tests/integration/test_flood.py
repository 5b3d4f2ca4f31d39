"""Per-connection budgets: a control socket over its message budget is read more slowly
(not refused), one that stays over it is closed with RATE_LIMITED, and a client flooding as
fast as it can does not starve another client's media (benchmarks/control_flood.py
measures the same at length)."""

from __future__ import annotations

import asyncio
import json
import math
import sys
import time
from pathlib import Path

import aiohttp
import httpx
import pytest

from scope_relay.cloud.app import STATE_KEY
from scope_relay.cloud.control.budget import SocketCaps, ThrottleMeter, TokenBucket, key_identity
from scope_relay.local.server import RELAY_KEY

from helpers.control import control_socket
from helpers.peers import connected
from helpers.servers import cloud_server, relay_server

FLOODER = Path(__file__).resolve().parents[2] / "benchmarks" / "control_flood.py"


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) / 1024 for line in status if line.startswith("VmRSS:"))


# --- the bookkeeping ------------------------------------------------------------------------

def test_token_bucket_refills_at_its_rate_up_to_its_burst():
    clock = FakeClock()
    bucket = TokenBucket(rate=10, burst=3, clock=clock)
    assert [bucket.take() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take() == pytest.approx(0.1)  # none left: a tenth of a second to the next
    assert bucket.take() == pytest.approx(0.1)  # (asking again takes nothing)
    clock.now += 0.1
    assert bucket.take() == 0.0
    clock.now += 60  # a long quiet spell refills only up to the burst
    assert [bucket.take() for _ in range(4)][-1] == pytest.approx(0.1)
    for rate, burst in ((0, 1), (math.inf, 1), (10, 0)):
        with pytest.raises(ValueError):
            TokenBucket(rate=rate, burst=burst)


def test_throttle_meter_sums_the_last_window_only():
    clock = FakeClock()
    meter = ThrottleMeter(window=10, clock=clock)
    for _ in range(5):
        meter.add(1.0)
        clock.now += 1.0
    assert meter.total() == pytest.approx(5.0)
    clock.now += 6.5  # 11.5 s after the first: the first two waits are out of the window
    assert meter.total() == pytest.approx(3.0)
    clock.now += 100
    assert meter.total() == 0.0


def test_socket_caps_count_and_release():
    caps = SocketCaps(per_address=2, per_key=3)
    assert caps.admit("a", "k") is None and caps.admit("a", "k") is None
    assert caps.admit("a", "k") == "address"
    assert caps.admit("b", "k") is None and caps.admit("c", "k") == "key"
    for address in ("a", "a", "b"):
        caps.release(address, "k")
    assert not caps.by_address and not caps.by_key  # nothing kept for who left
    assert caps.refused == {"address": 1, "key": 1} and caps.refused_total == 2
    assert SocketCaps(None, None).admit("a", "k") is None
    assert key_identity(None) == "anonymous"
    assert key_identity(b"secret") == key_identity(b"secret") != key_identity(b"other")
    assert "secret" not in key_identity(b"secret")


# --- one socket ---------------------------------------------------------------------------

async def receive_json(ws, timeout: float = 10.0) -> dict:
    return json.loads((await asyncio.wait_for(ws.receive(), timeout)).data)


async def test_a_legitimate_burst_is_never_held_back():
    async with cloud_server() as cloud, control_socket(cloud) as ws:
        for i in range(150):  # far more at once than the relay or Scope ever sends
            await ws.send_json({"type": "ping", "request_id": str(i)})
        replies = [await receive_json(ws) for _ in range(150)]
        assert sorted(int(r["request_id"]) for r in replies) == list(range(150))
        assert cloud.app[STATE_KEY].rate_limited_messages == 0


async def test_over_budget_reads_pause_instead_of_refusing():
    async with cloud_server(message_rate=20, message_burst=5) as cloud, \
            control_socket(cloud) as ws:
        started = time.monotonic()
        for i in range(30):
            await ws.send_json({"type": "ping", "request_id": str(i)})
        replies = [await receive_json(ws) for _ in range(30)]
        elapsed = time.monotonic() - started
        assert [r["type"] for r in replies] == ["pong"] * 30  # every one answered, none refused
        assert elapsed >= 0.8 * (30 - 5) / 20  # 5 at once, then 20 a second
        (channel,) = cloud.app[STATE_KEY].control_channels
        assert channel.rate_limited_messages >= 20 and not ws.closed


async def test_websocket_pings_are_on_the_budget_too():
    async with cloud_server(message_rate=10, message_burst=2) as cloud, \
            control_socket(cloud, autoping=False) as ws:
        for i in range(8):
            await ws.ping(str(i).encode())
        pongs = [await asyncio.wait_for(ws.receive(), 10) for _ in range(8)]
        assert [p.type for p in pongs] == [aiohttp.WSMsgType.PONG] * 8
        assert [p.data for p in pongs] == [str(i).encode() for i in range(8)]
        assert cloud.app[STATE_KEY].rate_limited_messages >= 5


async def test_staying_over_budget_closes_with_rate_limited():
    async with cloud_server(message_rate=20, message_burst=5,
                            rate_limit_close_after=0.5) as cloud, control_socket(cloud) as ws:
        for i in range(400):
            await ws.send_json({"type": "ping", "request_id": str(i)})
        pongs, error = 0, None
        while (msg := await asyncio.wait_for(ws.receive(), 10)).type == aiohttp.WSMsgType.TEXT:
            data = json.loads(msg.data)
            if data["type"] == "pong":
                pongs += 1
            else:
                error = data
        assert error is not None and error["code"] == "RATE_LIMITED" and error["status"] == 429
        assert "request_id" not in error and "20 messages a second" in error["error"]
        assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 1008
        assert 5 <= pongs <= 5 + 20 * 0.5 + 5  # the burst, then the rate until the limit
        async with httpx.AsyncClient(base_url=cloud.url) as http:
            stats = (await http.get("/api/v1/stats")).json()
            metrics = (await http.get("/metrics")).text
        assert stats["rate_limited_sockets"] == 1 and stats["rate_limited_messages"] >= 10
        assert "scope_cloud_rate_limited_sockets_total 1.0" in metrics


async def test_a_flood_of_invalid_messages_is_closed_without_reading_its_backlog():
    async with cloud_server() as cloud, control_socket(cloud) as ws:
        for _ in range(3000):  # past the 50 allowed in 10 s, and a backlog behind them
            await ws.send_str("not json")
        refusals = 0
        while (msg := await asyncio.wait_for(ws.receive(), 10)).type == aiohttp.WSMsgType.TEXT:
            refusals += json.loads(msg.data)["code"] == "INVALID_MESSAGE"
        assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 1008
        assert msg.extra == "too many invalid messages" and refusals == 51


# --- a flood beside a live session -----------------------------------------------------------

async def test_a_flooding_socket_does_not_starve_another_clients_media():
    """A separate process sends pings as fast as it can for 4 s while a session streams
    test-tone through the relay to a peer. Without budgets this loses the victim's cloud hop
    and seconds of audio (benchmarks/control_flood.py: 1,810 relay underruns, the event loop
    stalled 4.7 s); with them the victim plays on and the flooder is closed."""
    async with cloud_server(rate_limit_close_after=2.0) as cloud, relay_server(cloud) as relay, \
            connected(relay.url, {"pipeline_ids": ["test-tone"]}, video=False) as peer:
        await peer.wait_audio_frames(25)
        (cloud_session,) = cloud.app[STATE_KEY].sessions.values()
        (relay_session,) = relay.app[RELAY_KEY].sessions.values()
        underruns, stalled = (cloud_session.buffer.counts.underruns,
                              cloud_session.buffer.counts.stalled_samples)
        relay_underruns = relay_session.stats()["audio_underruns"]
        memory = rss_mb()

        flooder = await asyncio.create_subprocess_exec(
            sys.executable, str(FLOODER), "--role", "flood", "--url", cloud.ws_url,
            "--seconds", "4", stdout=asyncio.subprocess.PIPE)
        out, _ = await asyncio.wait_for(flooder.communicate(), 60)
        flood = json.loads(out.decode().strip().splitlines()[-1])
        await peer.wait_audio_frames(25)  # still streaming afterwards

        pongs = flood["replies"].get("pong", 0)
        assert flood["closed_by_cloud"] and flood["close_code"] == 1008, flood
        assert flood["unsolicited_error"] == "RATE_LIMITED", flood
        assert pongs <= 200 + 50 * 3 and flood["sent"] > 5 * pongs, flood  # burst + ~2 s of rate
        # the victim: same session (the cloud hop was never lost), audio kept coming
        assert cloud.app[STATE_KEY].sessions == {cloud_session.session_id: cloud_session}
        lost_ms = (cloud_session.buffer.counts.stalled_samples - stalled) / 48
        # Generous bounds for a shared 2-core test machine; measured: 0 and 0.
        assert cloud_session.buffer.counts.underruns - underruns <= 5 and lost_ms <= 200, lost_ms
        assert relay_session.stats()["audio_underruns"] - relay_underruns <= 25
        assert rss_mb() - memory < 64  # what the cloud reads from a socket is bounded
        async with httpx.AsyncClient(base_url=cloud.url) as http:
            stats = (await http.get("/api/v1/stats")).json()
        assert stats["rate_limited_sockets"] == 1 and stats["rate_limited_messages"] > 50
