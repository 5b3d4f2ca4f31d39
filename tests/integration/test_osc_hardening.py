"""OSC cannot stall or flood the relay: timetags are scheduled on the loop (never slept
on), updates to the cloud are coalesced and rate-limited, bad packets are counted and
dropped with one short log line. Real sockets, the real relay, the real cloud app."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import signal
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
from pythonosc.osc_message_builder import OscMessageBuilder

from scope_relay.cloud.app import STATE_KEY
from scope_relay.local.inputs.osc import OscInput
from scope_relay.local.server import RELAY_KEY

from helpers.peers import BrowserPeer, connected
from helpers.processes import relay_process
from helpers.servers import Served, cloud_server, relay_server
from helpers.waiting import wait_until

#: the relay's HTTP must answer within this while bundles are pending (the issue asks
#: 0.5 s; one more second of slack for a 2-core box shared with other test runs: a relay
#: sleeping until a timetag fails it either way)
HTTP_BOUND = 1.0
#: what the relay promises (docs/protocol.md): at most this many updates a second to the
#: cloud, and bundles nested this deep are fine
SEND_RATE = 60.0
NESTING_ALLOWED = 4
#: the wire format, written here from the OSC 1.0 spec rather than taken from the relay
BUNDLE = b"#bundle\x00"
IMMEDIATELY = 1
NTP_TO_UNIX = 2_208_988_800
OSC_LOGGER = "scope_relay.local.inputs.osc"


def message(address: str, value: Any) -> bytes:
    builder = OscMessageBuilder(address)
    builder.add_arg(value)
    return builder.build().dgram


def bundle(tag: int, *elements: bytes) -> bytes:
    return BUNDLE + tag.to_bytes(8, "big") + b"".join(
        len(e).to_bytes(4, "big") + e for e in elements)


def timetag(unix: float) -> int:
    return int((unix + NTP_TO_UNIX) * 2**32)


@contextlib.asynccontextmanager
async def osc_session() -> AsyncIterator[tuple[Served, BrowserPeer, OscInput, Any]]:
    """A playing ``test-tone`` session on a relay whose OSC listens on a free port:
    ``(relay, its peer, the relay's OSC input, the cloud's media session)``."""
    async with cloud_server() as cloud, relay_server(cloud, osc_address=("127.0.0.1", 0)) as relay, \
            connected(relay.url, {"pipeline_ids": ["test-tone"]}, video=False) as peer:
        osc = relay.app[RELAY_KEY].osc
        assert osc is not None
        await peer.wait_audio_frames(10)
        (session,) = cloud.app[STATE_KEY].sessions.values()
        yield relay, peer, osc, session


def record_parameters(cloud_session: Any) -> list[tuple[float, dict[str, Any]]]:
    """Every ``parameters`` message the cloud session takes, with when (monotonic)."""
    arrivals: list[tuple[float, dict[str, Any]]] = []
    original = cloud_session.on_parameters

    def record(raw: str, updates: dict[str, Any]) -> None:
        arrivals.append((time.monotonic(), dict(updates)))
        original(raw, updates)

    cloud_session.on_parameters = record
    return arrivals


def frequencies(arrivals: list[tuple[float, dict[str, Any]]]) -> list[float]:
    return [u["frequency"] for _, u in arrivals if "frequency" in u]


async def test_timetags_ahead_never_stall_the_relay():
    """A bundle timetagged in 2036 or 6 s ahead: applied at once (counted), the relay's HTTP
    and audio go on; one 0.5 s ahead: held until its time, HTTP answering meanwhile."""
    async with cloud_server() as cloud, relay_process(cloud, "--osc-port", "0") as relay, \
            connected(relay.url, {"pipeline_ids": ["test-tone"]}, video=False) as peer, \
            httpx.AsyncClient(base_url=relay.url, timeout=HTTP_BOUND) as http:
        (port,) = {int(m.group(1)) for line in relay.output
                   if (m := re.search(r"OSC input: udp://[^:]+:(\d+)", line))}
        await peer.wait_audio_frames(10)
        (session,) = cloud.app[STATE_KEY].sessions.values()
        arrivals = record_parameters(session)
        latencies = []

        async def osc_stats() -> dict[str, int]:
            started = time.monotonic()
            answer = (await http.get("/api/v1/stats")).json()["osc"]  # times out if stalled
            latencies.append(time.monotonic() - started)
            return answer

        async def until_counted(name: str, count: int) -> None:
            """Ask the stats until ``name`` reaches ``count`` (each answer timed)."""
            async with asyncio.timeout(10):
                while (await osc_stats())[name] < count:
                    await asyncio.sleep(0.02)

        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            far = ((0xFFFFFFFF << 32, 500.0), (timetag(time.time() + 6), 600.0))
            for count, (tag, value) in enumerate(far, 1):
                udp.sendto(bundle(tag, message("/param/frequency", value)), ("127.0.0.1", port))
                await until_counted("timetag_ahead", count)
                await wait_until(lambda v=value: v in frequencies(arrivals), timeout=10)
            await peer.wait_audio_frames(25, timeout=10)  # the audio goes on

            sent = time.monotonic()
            udp.sendto(bundle(timetag(time.time() + 0.5), message("/param/frequency", 700.0)),
                       ("127.0.0.1", port))
            await until_counted("scheduled", 1)
            await wait_until(lambda: 700.0 in frequencies(arrivals), timeout=10)
            (arrived,) = [t for t, u in arrivals if u.get("frequency") == 700.0]
        print(f"stats answered in {max(latencies) * 1000:.0f} ms at most "
              f"({len(latencies)} requests); the 0.5 s-ahead value reached the cloud "
              f"{arrived - sent:.3f} s after it was sent")
        assert max(latencies) < HTTP_BOUND
        assert 0.35 < arrived - sent < 1.5
        await wait_until(lambda: session.runner.params.get("frequency") == 700.0)
        stats = await osc_stats()
        assert stats["timetag_ahead"] == 2 and stats["scheduled"] == 1
        assert stats["forwarded"] == 3
        # and it still stops when asked (a relay asleep until 2036 ignored SIGINT)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.sendto(bundle(0xFFFFFFFF << 32, message("/param/frequency", 800.0)),
                       ("127.0.0.1", port))
        await until_counted("timetag_ahead", 3)
        relay.proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(relay.proc.wait(), 20) == 0


async def test_a_flood_is_coalesced_and_rate_limited():
    """5,000 values of one parameter as fast as the relay reads them: at most SEND_RATE
    ``parameters`` messages a second reach the cloud, and the last value wins."""
    async with osc_session() as (relay, peer, osc, session):
        arrivals = record_parameters(session)
        total, chunk = 5000, 100  # a chunk fits the socket's buffer: none lost in the kernel
        started = time.monotonic()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            for first in range(0, total, chunk):
                for i in range(first, first + chunk):
                    udp.sendto(message("/param/frequency", 200.0 + i), ("127.0.0.1", osc.port))
                await wait_until(lambda n=first + chunk: osc.counts.received >= n, interval=0.001)
        flood = time.monotonic() - started
        last = 200.0 + total - 1
        await wait_until(lambda: session.runner.params.get("frequency") == last, timeout=10)
        elapsed = arrivals[-1][0] - started
        sent = frequencies(arrivals)
        print(f"{total} OSC messages in {flood:.2f} s: {len(sent)} updates reached the cloud "
              f"in {elapsed:.2f} s; coalesced {osc.counts.coalesced}")
        assert sent[-1] == last and sent == sorted(sent)  # the newest value, in order
        assert len(sent) <= SEND_RATE * elapsed + 2
        assert len(sent) < total / 10
        assert osc.counts.received == total and osc.counts.dropped == 0
        assert osc.counts.updates_sent == len(sent)
        assert osc.counts.coalesced + osc.counts.forwarded == total


async def test_nested_and_malformed_packets_are_counted_and_dropped(caplog):
    """Bundles nested 100 and 2,500 deep (python-osc: a RecursionError traceback per packet)
    and garbage: counted, dropped, one short line each kind; OSC goes on working."""
    caplog.set_level(logging.WARNING, logger=OSC_LOGGER)
    async with osc_session() as (relay, peer, osc, session):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            for depth, value in ((100, 300.0), (2500, 310.0)):
                packet = message("/param/frequency", value)
                for _ in range(depth):
                    packet = bundle(IMMEDIATELY, packet)
                udp.sendto(packet, ("127.0.0.1", osc.port))
            for garbage in (b"\x00\x01garbage", b"#bundle\x00" + b"\xff" * 12,
                            b"/param/frequency\x00\x00\x00\x00,f\x00"):
                udp.sendto(garbage, ("127.0.0.1", osc.port))
            await wait_until(lambda: osc.counts.too_deep == 2 and osc.counts.malformed == 3)
            # nesting within the cap is fine, and OSC goes on
            packet = message("/param/frequency", 320.0)
            for _ in range(NESTING_ALLOWED):
                packet = bundle(IMMEDIATELY, packet)
            udp.sendto(packet, ("127.0.0.1", osc.port))
            await wait_until(lambda: session.runner.params.get("frequency") == 320.0)
        assert osc.counts.forwarded == 1 and osc.counts.received == 1
        lines = [r for r in caplog.records if r.name == OSC_LOGGER]
        print("\n".join(r.getMessage() for r in lines))
        assert len(lines) == 2, lines  # one per kind: the rest wait for the next line
        assert all(len(r.getMessage()) < 200 and r.exc_info is None for r in lines)
        async with httpx.AsyncClient(base_url=relay.url, timeout=10) as http:
            stats = (await http.get("/api/v1/stats")).json()["osc"]
            assert stats["too_deep"] == 2 and stats["malformed"] == 3
            assert "scope_relay_osc_too_deep 2.0" in (await http.get("/metrics")).text
        await peer.wait_audio_frames(25)


async def test_parsing_has_a_budget():
    """Beyond 10,000 messages in a burst (2,000 a second sustained) packets are dropped
    unread and counted: a flood cannot take the event loop from the media."""
    async with cloud_server() as cloud, relay_server(cloud, osc_address=("127.0.0.1", 0)) as relay:
        osc = relay.app[RELAY_KEY].osc
        assert osc is not None
        packet = bundle(IMMEDIATELY, *[message("/param/frequency", 300.0)] * 250)
        started = time.monotonic()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            for sent in range(1, 61):  # 15,000 messages
                udp.sendto(packet, ("127.0.0.1", osc.port))
                await wait_until(lambda n=sent: osc.counts.received + osc.counts.dropped * 250
                                 >= n * 250, interval=0.001)
        elapsed = time.monotonic() - started
        print(f"15,000 messages in {elapsed:.2f} s: {osc.counts.received} parsed, "
              f"{osc.counts.dropped} packets dropped")
        assert osc.counts.dropped >= 1
        assert osc.counts.received <= 10_000 + 2000 * elapsed + 250
        assert osc.counts.received + osc.counts.dropped * 250 == 15_000
