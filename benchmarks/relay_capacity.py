"""Sessions through the relay on one machine: N receivers at once, each its own cloud
session of ``av-sync``, the cloud app and the relay as separate processes (as a user runs
them), the receivers here.

Per N (1, 2, 4, 8 by default) it prints: the relay's audio underruns, late and skipped
audio, and delay raises summed over the sessions (during the measured window); lip sync at
the receivers (click minus flash through the relay's sender reports: median and worst);
the relay's, the cloud's and the receivers' (this process's) CPU (% of one core), the
relay's and the cloud's resident memory with the sessions open, and both processes'
memory again once every session has closed.

    .venv/bin/python benchmarks/relay_capacity.py [--sessions 1 2 4 8] [--seconds 10] [--quick]
        [--height 720 [--fps 30]] [--transcode] [--decode N]

``--height``: each session streams the ``hd-test`` picture (16:9, video only) at that
height and ``--fps`` instead of ``av-sync``; the receivers then count video frames per
second (the slowest one's is printed) and there is no lip sync to measure.
``--transcode``: the relay decodes and encodes video again, as before it forwarded the
cloud's (the "before" of docs/architecture.md's table).
``--decode N``: only the first N receivers of each row decode video (lip sync is measured
on those); the others take it as complete encoded frames, as the relay's viewers can. The
relay and the cloud do the same work either way (the underruns are the relay's), but N
receivers' VP8 decodes are not on the box beside them: the receivers stand in for pages,
which decode on their viewers' machines. Default: all of them (as the earlier figures).

On this machine the receivers run on the same 2 cores as the cloud app and the relay, so
the figures are a floor.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import socket
import statistics
import sys
import time
from typing import Any

os.environ.setdefault("SCOPE_RELAY_ICE_LOOPBACK", "1")

import httpx
import numpy as np
from aiortc import RTCSessionDescription
from latency import Receiver, Trial  # this folder's (run as a script)
from quick import parse_args

from scope_relay.rtc.ice import loopback_candidates
from scope_relay.rtc.receive_path import receive_path_of

CLI = [sys.executable, "-m", "scope_relay.cli"]
TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
#: --quick: one session (one row), a short window
QUICK = {"sessions": [1], "seconds": 1.0, "settle": 1.0}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def rss_mb(pid: int) -> float:
    return int(open(f"/proc/{pid}/statm").read().split()[1]) * PAGE / 2**20


async def start(args: list[str], pattern: str, env: dict[str, str]) -> tuple[Any, str]:
    proc = await asyncio.create_subprocess_exec(*CLI, *args, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT, env=env)
    assert proc.stdout is not None
    while line := (await asyncio.wait_for(proc.stdout.readline(), 60)).decode():
        match = re.search(pattern, line)
        if match:
            asyncio.ensure_future(drain(proc.stdout))
            return proc, match.group(1)
    raise RuntimeError(f"{args[0]} ended before serving")


async def start_pair(env: dict[str, str], cloud_flags: list[str],
                     relay_flags: list[str]) -> tuple[Any, str, Any, str]:
    """A cloud app and a relay on loopback (the relay on the cloud's control socket):
    (cloud, its http url, relay, the page's url); the cloud is stopped if the relay fails."""
    cloud, ws_url = await start(["cloud", "--host", "127.0.0.1", "--port", "0", *cloud_flags,
                                 "--loopback-ice", "--log-level", "WARNING"],
                                r"cloud app: (ws://\S+)", env)
    try:
        relay, relay_url = await start(["local", "--port", str(free_port()), *relay_flags,
                                        "--browser-loopback-ice", "--log-level", "WARNING"],
                                       r"open the page: (http://\S+?)/?\s*$",
                                       {**env, "SCOPE_CLOUD_WS_URL": ws_url})
    except BaseException:
        cloud.kill()
        await cloud.wait()
        raise
    return cloud, ws_url.replace("ws://", "http://").rsplit("/ws", 1)[0], relay, relay_url


async def offer_hd_test(pc: Any, relay_url: str, height: int, fps: float) -> None:
    """Negotiate ``pc``'s offer for an ``hd-test`` session at ``height`` and ``fps`` with the
    relay (loopback candidates only)."""
    with loopback_candidates():
        await pc.setLocalDescription(await pc.createOffer())
    async with httpx.AsyncClient(base_url=relay_url, timeout=120) as http:
        answer = (await http.post("/api/v1/webrtc/offer", json={
            "sdp": pc.localDescription.sdp, "type": "offer", "initialParameters": {
                "pipeline_ids": ["hd-test"], "height": height, "frame_rate": fps}})).json()
    await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))


async def drain(stream: asyncio.StreamReader) -> None:
    while await stream.readline():
        pass


#: initialParameters of every session (main() sets hd-test's for --height)
SESSION: dict[str, Any] = {"pipeline_ids": ["av-sync"]}


class CapacityReceiver(Receiver):
    """latency.py's receiver, lighter: a flash is read from the decoded frame's luma plane
    (no conversion to grey: that was ~7 % of this process), and with ``decode=False``
    video is not decoded at all (no flashes: lip sync comes from the receivers that do)."""

    def __init__(self, trial: Trial, began: float, decode: bool = True):
        super().__init__(trial, began)
        self.decodes = decode
        if not decode:
            for transceiver in self.pc.getTransceivers():
                path = receive_path_of(transceiver.receiver)
                if transceiver.kind == "video" and path is not None:
                    path.forward_video(lambda frame: self.on_frame("video", frame),
                                       lambda mime: True)

    def on_frame(self, kind: str, frame: Any) -> None:
        if kind != "video" or (self.decodes and frame.format.name != "yuv420p"):
            super().on_frame(kind, frame)
            return
        if not self.first["video"].is_set():
            self.trial.first_video = self._ms()
            self.first["video"].set()
        if not self.decodes:
            return
        luma = frame.planes[0]
        rows = np.frombuffer(luma, np.uint8).reshape(-1, luma.line_size)[:frame.height]
        bright = float(rows[:, :frame.width].mean())
        if bright > 128 >= self._bright:
            self.trial.flashes.append(frame.pts)
        self._bright = bright


#: receivers per row that decode video (--decode; None: all)
DECODE: int | None = None


async def open_session(relay_url: str, index: int = 0) -> Receiver:
    trial = Trial()
    receiver = CapacityReceiver(trial, time.monotonic(), DECODE is None or index < DECODE)
    with loopback_candidates():
        await receiver.pc.setLocalDescription(await receiver.pc.createOffer())
    async with httpx.AsyncClient(base_url=relay_url, timeout=120) as http:
        answer = (await http.post("/api/v1/webrtc/offer", json={
            "sdp": receiver.pc.localDescription.sdp, "type": "offer",
            "initialParameters": SESSION})).json()
    await receiver.pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))
    firsts = [receiver.first["video"]] if SESSION["pipeline_ids"] == ["hd-test"] else \
        receiver.first.values()
    await asyncio.wait_for(asyncio.gather(*(e.wait() for e in firsts)), 30)
    return receiver


def lip_sync(receiver: Receiver, since: float) -> list[float]:
    """Click minus flash (ms) for flashes after ``since`` (wall clock), paired within 0.5 s."""
    flashes = [t for t in (receiver.video_tap.best_time(p) for p in receiver.trial.flashes)
               if t is not None and t >= since]
    clicks = [t for t in (receiver.audio_tap.best_time(p) for p in receiver.trial.clicks)
              if t is not None]
    out = []
    for flash in flashes:
        nearest = min(clicks, key=lambda c: abs(c - flash), default=None)
        if nearest is not None and abs(nearest - flash) < 0.5:
            out.append((nearest - flash) * 1000)
    return out


def totals(stats: dict) -> dict[str, float]:
    keys = ("audio_underruns", "audio_late_ms", "audio_skipped_ms", "delay_raises")
    return {k: sum(float(s.get(k) or 0) for s in stats["sessions"]) for k in keys}


async def measure(n: int, seconds: float, relay_url: str, relay_pid: int, cloud_pid: int,
                  settle: float = 2.0) -> dict:
    receivers = await asyncio.gather(*(open_session(relay_url, i) for i in range(n)))
    async with httpx.AsyncClient(base_url=relay_url, timeout=30) as http:
        await asyncio.sleep(settle)  # past every session's start-up (a measured window follows)
        before = totals((await http.get("/api/v1/stats")).json())
        cpu0 = {pid: cpu_seconds(pid) for pid in (relay_pid, cloud_pid, os.getpid())}
        t0, wall0 = time.monotonic(), time.time()
        await asyncio.sleep(seconds)  # the window being measured
        elapsed = time.monotonic() - t0
        after = totals((await http.get("/api/v1/stats")).json())
        cpu = {pid: (cpu_seconds(pid) - cpu0[pid]) / elapsed * 100 for pid in cpu0}
        rss_open = {pid: rss_mb(pid) for pid in (relay_pid, cloud_pid)}
        offsets = [o for r in receivers for o in lip_sync(r, wall0)]
        for r in receivers:
            await r.close()
        deadline = time.monotonic() + 30
        while (await http.get("/api/v1/stats")).json()["sessions"]:
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
    await asyncio.sleep(settle)  # let both processes finish closing before reading memory
    return {"n": n, **{k: after[k] - before[k] for k in after},
            "av_median": statistics.median(offsets) if offsets else None,
            "av_worst": max(offsets, key=abs) if offsets else None, "paired": len(offsets),
            "relay_cpu": cpu[relay_pid], "cloud_cpu": cpu[cloud_pid],
            "receivers_cpu": cpu[os.getpid()],
            "relay_rss": rss_open[relay_pid], "cloud_rss": rss_open[cloud_pid],
            "relay_rss_after": rss_mb(relay_pid), "cloud_rss_after": rss_mb(cloud_pid)}


async def main(counts: list[int], seconds: float, settle: float = 2.0) -> dict[str, Any]:
    """Print a row per N; return the rows and the idle memory."""
    env = {**os.environ, "SCOPE_RELAY_ICE_LOOPBACK": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("SCOPE_CLOUD_API_KEY", None)
    cloud, ws_url = await start(["cloud", "--host", "127.0.0.1", "--port", "0",
                                 "--loopback-ice", "--log-level", "WARNING"],
                                r"cloud app: (ws://\S+)", env)
    relay_env = {**env, "SCOPE_CLOUD_WS_URL": ws_url}
    relay, relay_url = await start(["local", "--port", str(free_port()),
                                    "--browser-loopback-ice", "--log-level", "WARNING"],
                                   r"open the page: (http://\S+?)/?\s*$", relay_env)
    try:
        idle = (rss_mb(relay.pid), rss_mb(cloud.pid))
        out: dict[str, Any] = {"idle_relay_mb": idle[0], "idle_cloud_mb": idle[1], "rows": []}
        print(f"idle: relay {idle[0]:.0f} MB, cloud {idle[1]:.0f} MB resident")
        print(f"{'N':>3} {'underruns':>9} {'late ms':>8} {'skipped ms':>10} {'raises':>6} "
              f"{'A/V ms med (worst)':>19} {'relay CPU':>9} {'cloud CPU':>9} {'rcv CPU':>8} "
              f"{'relay MB':>9} {'cloud MB':>9} {'MB after (relay/cloud)':>22}")
        for n in counts:
            r = await measure(n, seconds, relay_url, relay.pid, cloud.pid, settle)
            out["rows"].append(r)
            av = ("-" if r["av_median"] is None
                  else f"{r['av_median']:+.1f} ({r['av_worst']:+.0f})")
            print(f"{n:>3} {r['audio_underruns']:>9.0f} {r['audio_late_ms']:>8.0f} "
                  f"{r['audio_skipped_ms']:>10.0f} {r['delay_raises']:>6.0f} {av:>19} "
                  f"{r['relay_cpu']:>8.0f}% {r['cloud_cpu']:>8.0f}% {r['receivers_cpu']:>7.0f}% "
                  f"{r['relay_rss']:>9.0f} "
                  f"{r['cloud_rss']:>9.0f} "
                  f"{r['relay_rss_after']:>10.0f}/{r['cloud_rss_after']:.0f}", flush=True)
    finally:
        for proc in (relay, cloud):
            proc.kill()
            await proc.wait()
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--settle", type=float, default=2.0,
                        help="seconds after opening (and after closing) each N's sessions")
    parser.add_argument("--height", type=int, default=None,
                        help="stream hd-test at this height (16:9) instead of av-sync")
    parser.add_argument("--fps", type=float, default=30.0, help="hd-test's frame rate")
    parser.add_argument("--decode", type=int, default=None,
                        help="only this many receivers of each row decode video and "
                             "measure lip sync (default: all)")
    parser.add_argument("--transcode", action="store_true",
                        help="the relay decodes and encodes video again (as before it "
                             "forwarded the cloud's; SCOPE_RELAY_TRANSCODE_VIDEO=1)")
    args = parse_args(parser, QUICK)
    DECODE = args.decode
    if args.transcode:
        os.environ["SCOPE_RELAY_TRANSCODE_VIDEO"] = "1"
    if args.height is not None:
        SESSION = {"pipeline_ids": ["hd-test"], "height": args.height, "frame_rate": args.fps}
    asyncio.run(main(args.sessions, args.seconds, args.settle))
    sys.exit(0)
