"""One control socket flooding the cloud app while another client's session streams.

Three processes, as in production where the flooder is someone else's machine:

- the **cloud app** (``--role cloud``, started by this script): the real app with a probe
  that measures its event loop's lag (a 10 ms timer, how late it fires) and its memory,
  read over ``GET /bench/loop``;
- this script: a **relay** and a receiving aiortc peer (the victim) streaming `test-tone`
  through it from the cloud app;
- the **flooder** (``--role flood``): one control socket sending valid ``ping`` messages
  as fast as it can for ``--seconds``, reading every reply (or ``--sockets`` of them, each
  paced at ``--rate`` pings a second: many sockets each just under its budget).

It prints the victim's underruns (the cloud's ``underruns`` and ``stalled_ms`` from
``GET /api/v1/stats``, the relay's ``audio_underruns`` and playout delay), the longest
gap between audio frames the victim received, the cloud's worst event-loop lag, what the
flooder got (answered, refused by code, how its socket ended) and the cloud's memory
before, during and after.

    .venv/bin/python benchmarks/control_flood.py [--seconds 10] [--cloud-config '{"message_rate": 0}']
    .venv/bin/python benchmarks/control_flood.py --sockets 32 --rate 49
    .venv/bin/python benchmarks/control_flood.py --quick

``--cloud-config`` is a JSON object of ``CloudConfig`` fields for the cloud app (e.g.
``{"message_rate": 0}`` turns the per-socket message budget off, to compare).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import re
import resource
import sys
import time
from typing import Any

os.environ.setdefault("SCOPE_RELAY_ICE_LOOPBACK", "1")

import aiohttp
import httpx
from aiohttp import web
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError
from quick import parse_args  # this folder's (run as a script)

from scope_relay.rtc.ice import rtc_configuration
from scope_relay.util.serve import serve

HERE = os.path.abspath(__file__)
#: --quick: a one-second flood after a one-second warm-up
QUICK = {"seconds": 1.0, "warmup": 1.0}


def rss_mb() -> float:
    """This process's resident memory now, in MiB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


# --- the cloud app, with a probe ---------------------------------------------------------

class LoopProbe:
    """How late a 10 ms timer fires on this event loop: the worst since the last reset,
    and how many firings were over 20 / 100 ms late."""

    PERIOD = 0.01

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.max_lag = 0.0
        self.over_20ms = 0
        self.over_100ms = 0
        #: lags over 50 ms: (wall time, lag, CPU the loop's thread used in that tick). Little
        #: CPU means the process was not running (other processes, or its own threads
        #: holding the GIL), not that the loop was busy.
        self.worst: list[tuple[float, float, float]] = []
        self.peak_rss = rss_mb()
        self.cpu_start = time.process_time()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        ticks = 0
        while True:
            started, cpu = loop.time(), time.thread_time()
            await asyncio.sleep(self.PERIOD)
            lag = loop.time() - started - self.PERIOD
            cpu = time.thread_time() - cpu  # what the loop's thread itself ran meanwhile
            self.max_lag = max(self.max_lag, lag)
            self.over_20ms += lag > 0.02
            self.over_100ms += lag > 0.1
            if lag > 0.05 and len(self.worst) < 50:
                self.worst.append((round(time.time(), 3), round(lag * 1000, 1),
                                   round(cpu * 1000, 1)))
            ticks += 1
            if ticks % 20 == 0:
                self.peak_rss = max(self.peak_rss, rss_mb())

    def report(self) -> dict[str, Any]:
        self.peak_rss = max(self.peak_rss, rss_mb())
        return {"max_lag_ms": round(self.max_lag * 1000, 1), "lags_over_20ms": self.over_20ms,
                "lags_over_100ms": self.over_100ms, "lags_over_50ms_at": self.worst,
                "rss_mb": round(rss_mb(), 1),
                "peak_rss_mb": round(self.peak_rss, 1),
                "cpu_s": round(time.process_time() - self.cpu_start, 2),
                "max_rss_ever_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


async def run_cloud(config: dict[str, Any]) -> None:
    from scope_relay.cloud.app import CloudConfig, create_app

    app = create_app(CloudConfig(loopback_ice=True, **config))
    probe = LoopProbe()

    async def loop_handler(request: web.Request) -> web.Response:
        report = probe.report()
        if request.query.get("reset"):
            probe.reset()
        return web.json_response(report)

    app.router.add_get("/bench/loop", loop_handler)
    async with serve(app) as served:
        task = asyncio.ensure_future(probe.run())
        print(f"cloud app: {served.ws_url}", flush=True)
        try:
            await asyncio.Event().wait()  # until killed
        finally:
            task.cancel()


# --- the flooder ---------------------------------------------------------------------------

async def flood_one(http: aiohttp.ClientSession, ws_url: str, seconds: float,
                    rate: float) -> dict[str, Any]:
    """One socket: pings as fast as it can (``rate`` 0) or paced at ``rate`` a second."""
    replies: collections.Counter[str] = collections.Counter()
    try:
        ws = await http.ws_connect(ws_url, max_msg_size=0)
    except aiohttp.WSServerHandshakeError as exc:  # a socket cap
        return {"refused": exc.status}
    first = await ws.receive_json()
    assert first["type"] == "ready", first
    unsolicited: list[str] = []

    async def read() -> None:
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                data = json.loads(msg.data)
                kind = data["type"]
                if kind == "error":
                    kind += ":" + str(data.get("code"))
                    if "request_id" not in data:
                        unsolicited.append(str(data.get("code")))
                replies[kind] += 1

    reader = asyncio.ensure_future(read())
    sent = 0
    started = time.monotonic()
    end = started + seconds
    send_error = None
    while time.monotonic() < end and not ws.closed:
        try:
            await ws.send_str(f'{{"type":"ping","request_id":"{sent}"}}')
        except Exception as exc:  # the cloud closed us
            send_error = type(exc).__name__
            break
        sent += 1
        if rate:
            await asyncio.sleep(max(0.0, started + sent / rate - time.monotonic()))
        elif sent % 64 == 0:
            await asyncio.sleep(0)  # let the reader count replies
    flooded = time.monotonic() - started
    try:
        await asyncio.wait_for(asyncio.shield(reader), 3.0)  # replies still on their way
    except TimeoutError:
        pass
    closed_by_cloud = ws.closed
    await ws.close()
    reader.cancel()
    return {"sent": sent, "seconds": flooded, "replies": replies,
            "closed_by_cloud": closed_by_cloud, "close_code": ws.close_code,
            "unsolicited_error": unsolicited[0] if unsolicited else None,
            "send_error": send_error}


async def run_flood(ws_url: str, seconds: float, sockets: int, rate: float) -> None:
    started_wall = time.time()
    async with aiohttp.ClientSession() as http:
        outcomes = await asyncio.gather(
            *(flood_one(http, ws_url, seconds, rate) for _ in range(sockets)))
    results = [r for r in outcomes if "refused" not in r]
    refused = collections.Counter(r["refused"] for r in outcomes if "refused" in r)
    replies: collections.Counter[str] = collections.Counter()
    for r in results:
        replies.update(r["replies"])
    sent = sum(r["sent"] for r in results)
    flooded = max(r["seconds"] for r in results)

    def most_common(key: str) -> Any:
        return collections.Counter(r[key] for r in results).most_common(1)[0][0]

    print(json.dumps({"sockets": sockets, "refused_upgrades": dict(refused), "sent": sent,
                      "seconds": round(flooded, 2),
                      "started_at": started_wall, "ended_at": time.time(),
                      "rate_per_s": round(sent / flooded) if flooded else 0,
                      "replies": dict(replies),
                      "closed_by_cloud": all(r["closed_by_cloud"] for r in results),
                      "close_code": most_common("close_code"),
                      "unsolicited_error": most_common("unsolicited_error"),
                      "send_error": most_common("send_error")}), flush=True)


# --- the victim and the orchestration -------------------------------------------------------

class Receiver:
    """A recvonly audio peer through the relay, as the page is; records frame arrivals."""

    def __init__(self) -> None:
        self.pc = RTCPeerConnection(rtc_configuration())
        self.pc.addTransceiver("audio", direction="recvonly")
        self.pc.createDataChannel("parameters", ordered=True)
        self.arrivals: list[float] = []
        self._tasks: list[asyncio.Future] = []
        self.pc.on("track", lambda track: self._tasks.append(asyncio.ensure_future(self._consume(track))))

    async def _consume(self, track) -> None:
        try:
            while True:
                await track.recv()
                self.arrivals.append(time.monotonic())
        except MediaStreamError:
            pass

    async def connect(self, relay_url: str) -> None:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        async with httpx.AsyncClient(base_url=relay_url, timeout=60) as http:
            r = await http.post("/api/v1/webrtc/offer", json={
                "sdp": self.pc.localDescription.sdp, "type": "offer",
                "initialParameters": {"pipeline_ids": ["test-tone"]}})
        r.raise_for_status()
        await self.pc.setRemoteDescription(RTCSessionDescription(r.json()["sdp"], "answer"))

    def max_gap_ms(self, since: float, until: float) -> float:
        times = [t for t in self.arrivals if since <= t <= until]
        return round(max((b - a for a, b in zip(times, times[1:], strict=False)), default=0.0) * 1000, 1)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await self.pc.close()


async def _cloud_figures(cloud_url: str, reset: bool = False) -> tuple[dict, dict]:
    async with httpx.AsyncClient(base_url=cloud_url, timeout=30) as http:
        stats = (await http.get("/api/v1/stats")).json()
        loop = (await http.get("/bench/loop", params={"reset": "1"} if reset else None)).json()
    # a cloud hop the relay rebuilt is a new session: the victim's figures are their sum
    sessions = stats["sessions"]
    total = {k: sum(s[k] for s in sessions) for k in ("underruns", "stalled_ms")}
    return total | {"sessions": len(sessions)}, loop


def _victim(cloud_session: dict, relay_session: dict) -> dict[str, Any]:
    return {"cloud_sessions": cloud_session["sessions"],
            "cloud_underruns": cloud_session["underruns"],
            "cloud_stalled_ms": cloud_session["stalled_ms"],
            "relay_audio_underruns": relay_session["audio_underruns"],
            "relay_audio_late_ms": relay_session["audio_late_ms"],
            "relay_playout_delay_ms": relay_session["playout_delay_ms"]}


async def main(seconds: float, warmup: float, cloud_config: str, sockets: int,
               rate: float) -> int:
    from scope_relay.local.cloud_link.target import CloudTarget
    from scope_relay.local.server import RELAY_KEY, RelayConfig, create_relay_app

    cloud = await asyncio.create_subprocess_exec(
        sys.executable, HERE, "--role", "cloud", "--cloud-config", cloud_config,
        stdout=asyncio.subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert cloud.stdout is not None
    receiver = None
    try:
        while True:
            line = (await asyncio.wait_for(cloud.stdout.readline(), 60)).decode()
            if not line:
                raise RuntimeError("the cloud app ended before serving")
            if match := re.search(r"cloud app: (ws://\S+)", line):
                ws_url = match.group(1)
                break
        cloud_url = "http://" + ws_url.removeprefix("ws://").removesuffix("/ws")
        relay_app = create_relay_app(RelayConfig(CloudTarget(ws_url), loopback_ice=True))
        async with serve(relay_app) as relay:
            receiver = Receiver()
            await receiver.connect(relay.url)
            (relay_session,) = relay_app[RELAY_KEY].sessions.values()
            print(f"victim streaming test-tone; warming up {warmup:g} s ...", flush=True)
            await asyncio.sleep(warmup)  # the measurement period itself
            cloud_before, loop_before = await _cloud_figures(cloud_url, reset=True)
            victim_before = _victim(cloud_before, relay_session.stats())
            print(f"before the flood: victim {victim_before}; cloud loop {loop_before}",
                  flush=True)

            flood_started, flood_started_wall = time.monotonic(), time.time()
            flooder = await asyncio.create_subprocess_exec(
                sys.executable, HERE, "--role", "flood", "--url", ws_url,
                "--seconds", str(seconds), "--sockets", str(sockets), "--rate", str(rate),
                stdout=asyncio.subprocess.PIPE)
            peak_during = 0.0
            async with httpx.AsyncClient(base_url=cloud_url, timeout=30) as http:
                while flooder.returncode is None:
                    try:
                        await asyncio.wait_for(flooder.wait(), 1.0)
                    except TimeoutError:
                        probe = (await http.get("/bench/loop")).json()
                        peak_during = max(peak_during, probe["rss_mb"])
            out, _ = await flooder.communicate()
            flood_ended = time.monotonic()
            flood = json.loads(out.decode().strip().splitlines()[-1])
            await asyncio.sleep(2.0)  # media in flight settles
            cloud_after, loop_after = await _cloud_figures(cloud_url)
            victim_after = _victim(cloud_after, relay_session.stats())
            relay_status = relay_app[RELAY_KEY].connection.status()

        delta = {k: round(victim_after[k] - victim_before[k], 1)
                 for k in victim_before if not k.endswith(("playout_delay_ms", "sessions"))}
        for mark in ("started_at", "ended_at"):  # seconds since the flooder was started
            flood[mark] = round(flood[mark] - flood_started_wall, 2)
        print(f"\nflooder: {flood}")
        print(f"victim's cloud sessions: {victim_before['cloud_sessions']} before, "
              f"{victim_after['cloud_sessions']} after (a rebuilt cloud hop adds one); relay's "
              f"control socket: {relay_status}")
        print(f"victim during the flood (+2 s): {delta}, relay playout delay "
              f"{victim_before['relay_playout_delay_ms']} -> {victim_after['relay_playout_delay_ms']} ms, "
              f"longest gap between received audio frames "
              f"{receiver.max_gap_ms(flood_started, flood_ended + 2.0)} ms")
        print(f"cloud event loop during the flood: max lag {loop_after['max_lag_ms']} ms, "
              f"{loop_after['lags_over_20ms']} ticks over 20 ms, {loop_after['lags_over_100ms']} over "
              f"100 ms; cloud CPU {loop_after['cpu_s']} s")
        worst = [(round(t - flood_started_wall, 2), lag, cpu)
                 for t, lag, cpu in loop_after["lags_over_50ms_at"]]
        print(f"  lags over 50 ms (s since the flooder was started, lag ms, loop thread's CPU ms "
              f"meanwhile): {worst}")
        peak = max(peak_during, loop_after["peak_rss_mb"])
        print(f"cloud memory: {loop_before['rss_mb']} MiB before, peak {peak} MiB during, "
              f"{loop_after['rss_mb']} MiB after")
        return 0
    finally:
        if receiver is not None:
            await receiver.close()
        if cloud.returncode is None:
            cloud.kill()
            await cloud.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--role", choices=["main", "cloud", "flood"], default="main")
    parser.add_argument("--seconds", type=float, default=10.0, help="how long to flood")
    parser.add_argument("--warmup", type=float, default=4.0,
                        help="seconds the victim streams before the flood")
    parser.add_argument("--cloud-config", default="{}", help="CloudConfig fields as JSON")
    parser.add_argument("--sockets", type=int, default=1, help="flooding sockets (default 1)")
    parser.add_argument("--rate", type=float, default=0.0,
                        help="pings a second per flooding socket (default 0: as fast as it can)")
    parser.add_argument("--url", help="(flood) the cloud app's /ws")
    args = parse_args(parser, QUICK)
    if args.role == "cloud":
        asyncio.run(run_cloud(json.loads(args.cloud_config)))
    elif args.role == "flood":
        asyncio.run(run_flood(args.url, args.seconds, args.sockets, args.rate))
    else:
        sys.exit(asyncio.run(main(args.seconds, args.warmup, args.cloud_config, args.sockets,
                                  args.rate)))
