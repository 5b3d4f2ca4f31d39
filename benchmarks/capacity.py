"""Sessions per machine: how many concurrent sessions of each built-in pipeline one cloud
app serves cleanly (no audio underrun, no late video, every frame delivered).

Starts ``scope-relay cloud`` as its own process (or uses ``--cloud ws://host:port/ws``),
opens N sessions at once with plain aiortc receivers speaking the control protocol, lets
them play, and reads the cloud's own figures over the measured window. N doubles until a
run is not clean.

    .venv/bin/python benchmarks/capacity.py [--pipelines test-tone av-sync] [--seconds 10] [--quick]
    .venv/bin/python benchmarks/capacity.py --cloud ws://gpu-box:8001/ws --api-key KEY

Locally the receivers decode on the same cores as the cloud app, so the figures are a
floor; on a GPU box, run this from another machine with ``--cloud``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

os.environ.setdefault("SCOPE_RELAY_ICE_LOOPBACK", "1")

import aiohttp
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError
from quick import parse_args  # this folder's (run as a script)

from scope_relay.protocol import messages as m
from scope_relay.rtc.ice import rtc_configuration

CLEAN_DELIVERY = 0.95  # share of the expected audio/video frames that must arrive
FLAGS = {"test-tone": (False, True), "av-sync": (True, True), "bursty-av": (True, True),
         "colour-field": (True, True)}
#: --quick: an audio-only and an audio + video pipeline, one session each, one-second windows
QUICK = {"pipelines": ["test-tone", "av-sync"], "seconds": 1.0, "max_sessions": 1}


@dataclass
class Receiver:
    """One session: a control socket, a peer connection, frame counts."""

    pc: RTCPeerConnection
    ws: aiohttp.ClientWebSocketResponse
    frames: dict[str, int] = field(default_factory=lambda: {"audio": 0, "video": 0})
    tasks: list[asyncio.Task] = field(default_factory=list)

    async def consume(self, track) -> None:
        try:
            while True:
                await track.recv()
                self.frames[track.kind] += 1
        except MediaStreamError:
            pass

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await self.pc.close()
        await self.ws.close()


async def request(ws: aiohttp.ClientWebSocketResponse, message: m.Request) -> dict:
    await ws.send_str(m.encode(message.to_message()))
    while True:
        reply = await asyncio.wait_for(ws.receive_json(), 120)
        if reply.get("request_id") == message.request_id:
            if reply["type"] == "error":
                raise RuntimeError(f"{message.type}: {reply['error']}")
            return reply


async def open_session(http: aiohttp.ClientSession, ws_url: str, headers: dict,
                       pipeline: str, index: int) -> Receiver:
    ws = await http.ws_connect(ws_url, headers=headers, max_msg_size=16 << 20)
    ready = await asyncio.wait_for(ws.receive_json(), 120)
    assert ready["type"] == "ready", ready
    servers = m.parse_ice_servers(await request(ws, m.GetIceServers(f"i{index}")))
    pc = RTCPeerConnection(rtc_configuration(servers))
    receiver = Receiver(pc, ws)
    video, audio = FLAGS[pipeline]
    if video:
        pc.addTransceiver("video", direction="recvonly")
    if audio:
        pc.addTransceiver("audio", direction="recvonly")
    pc.createDataChannel("parameters")
    pc.on("track", lambda t: receiver.tasks.append(asyncio.ensure_future(receiver.consume(t))))
    await pc.setLocalDescription(await pc.createOffer())
    offer = m.Offer(f"o{index}", pc.localDescription.sdp,
                    initial_parameters={"pipeline_ids": [pipeline]})
    answer = m.parse_answer(await request(ws, offer))
    await pc.setRemoteDescription(RTCSessionDescription(answer.sdp, "answer"))
    return receiver


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def cloud_figures(http: aiohttp.ClientSession, url: str, headers: dict) -> dict[str, float]:
    async with http.get(url + "/api/v1/stats", headers=headers) as response:
        sessions = (await response.json())["sessions"]
    keys = ("underruns", "late_video_frames", "stalled_ms", "skipped_ms")
    return {k: sum(float(s.get(k, 0)) for s in sessions) for k in keys}


async def run(ws_url: str, headers: dict, pipeline: str, n: int, seconds: float,
              pid: int | None) -> dict[str, float]:
    base = ws_url.replace("ws://", "http://").replace("wss://", "https://").removesuffix("/ws")
    async with aiohttp.ClientSession() as http:
        receivers = await asyncio.gather(
            *(open_session(http, ws_url, headers, pipeline, i) for i in range(n)))
        try:
            warm = time.monotonic() + 30
            while min(r.frames["audio"] + r.frames["video"] for r in receivers) < 25:
                assert time.monotonic() < warm, "sessions did not start in 30 s"
                await asyncio.sleep(0.1)
            await asyncio.sleep(2.0)  # past start-up: the first chunk, the first reports
            before = await cloud_figures(http, base, headers)
            counts = [dict(r.frames) for r in receivers]
            cpu0, t0 = (cpu_seconds(pid) if pid else 0.0), time.monotonic()
            await asyncio.sleep(seconds)
            elapsed = time.monotonic() - t0
            cpu = (cpu_seconds(pid) - cpu0) / elapsed * 100 if pid else float("nan")
            after = await cloud_figures(http, base, headers)
        finally:
            await asyncio.gather(*(r.close() for r in receivers))
    video, audio = FLAGS[pipeline]
    fps = 24.0
    delivered = []
    for r, c in zip(receivers, counts, strict=True):
        if audio:
            delivered.append((r.frames["audio"] - c["audio"]) / (elapsed * 50))
        if video:
            delivered.append((r.frames["video"] - c["video"]) / (elapsed * fps))
    out = {k: after[k] - before[k] for k in after}
    out.update(cpu_percent=cpu, worst_delivery=min(delivered))
    out["clean"] = float(out["underruns"] == 0 and out["late_video_frames"] <= 0.01 * n * elapsed
                         * fps and out["worst_delivery"] >= CLEAN_DELIVERY)
    return out


@contextlib.asynccontextmanager
async def local_cloud(api_key: str | None) -> AsyncIterator[tuple[str, int]]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    args = [sys.executable, "-m", "scope_relay.cli", "cloud", "--port", "0", "--loopback-ice",
            "--max-sessions", "64", "--max-sockets-per-address", "0",
            "--max-sockets-per-key", "0", "--log-level", "WARNING"]
    proc = await asyncio.create_subprocess_exec(*args, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT, env=env)
    assert proc.stdout is not None
    try:
        while line := (await asyncio.wait_for(proc.stdout.readline(), 60)).decode():
            match = re.search(r"cloud app: (ws://\S+)", line)
            if match:
                yield match.group(1), proc.pid
                break
        else:
            raise RuntimeError("the cloud app did not start")
    finally:
        proc.terminate()
        await proc.wait()


async def main(args: argparse.Namespace) -> None:
    headers = {"Authorization": f"Key {args.api_key}"} if args.api_key else {}
    async with contextlib.AsyncExitStack() as stack:
        if args.cloud:
            ws_url, pid = args.cloud, None
        else:
            ws_url, pid = await stack.enter_async_context(local_cloud(args.api_key))
        print(f"{'pipeline':<10} {'N':>3} {'underruns':>9} {'late video':>10} {'stalled ms':>10} "
              f"{'skipped ms':>10} {'delivered':>9} {'cloud CPU %':>11}  clean")
        for pipeline in args.pipelines:
            n, best = 1, 0
            while n <= args.max_sessions:
                r = await run(ws_url, headers, pipeline, n, args.seconds, pid)
                print(f"{pipeline:<10} {n:>3} {r['underruns']:>9.0f} {r['late_video_frames']:>10.0f} "
                      f"{r['stalled_ms']:>10.0f} {r['skipped_ms']:>10.0f} "
                      f"{r['worst_delivery']:>9.1%} {r['cpu_percent']:>11.0f}  "
                      f"{'yes' if r['clean'] else 'no'}", flush=True)
                if not r["clean"]:
                    break
                best, n = n, n * 2
            print(f"{pipeline}: {best} clean sessions (largest clean N tried)", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pipelines", nargs="+",
                        default=["test-tone", "av-sync", "bursty-av", "colour-field"],
                        choices=sorted(FLAGS))
    parser.add_argument("--seconds", type=float, default=10.0, help="measured window per run")
    parser.add_argument("--max-sessions", type=int, default=32)
    parser.add_argument("--cloud", help="a running cloud app's ws:// URL (default: start one)")
    parser.add_argument("--api-key", default=os.environ.get("SCOPE_CLOUD_API_KEY"))
    asyncio.run(main(parse_args(parser, QUICK)))
