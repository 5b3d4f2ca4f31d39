"""What each extra viewer of a session costs the relay: its process CPU time per second.

Starts ``scope-relay cloud`` and ``scope-relay local`` as processes of their own, opens
one owner session on a pipeline (``av-sync`` by default) with a plain aiortc receiver,
then adds receive-only viewers through the session's share link one at a time. For 0, 1,
2, ... extra viewers it reads the relay process's CPU time (user + system, from
``/proc/<pid>/stat``) over a fixed window and prints it, and the cost per extra viewer (a
least-squares slope). The cloud app's CPU is printed too: it must not change with viewers
(one cloud session, one generation).

    .venv/bin/python benchmarks/viewers.py [--viewers 3] [--seconds 10] [--pipeline av-sync]
        [--quick] [--height 720 [--fps 30]] [--undecoded] [--transcode]

``--height``: the ``hd-test`` picture at that height (16:9) and ``--fps`` instead of the
pipeline named (an HD session's fan-out). ``--undecoded``: the receivers count encoded
video frames instead of decoding them (16 HD viewers on a 2-core box). ``--transcode``:
the relay decodes and encodes again, as before it forwarded the cloud's video.

The receivers decode in this process, on the same cores: on a small machine the figures
are a ceiling for what the relay needs, not a floor.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import sys
from collections.abc import AsyncIterator
from typing import Any

os.environ.setdefault("SCOPE_RELAY_ICE_LOOPBACK", "1")

import httpx
import numpy as np
from aiortc import RTCSessionDescription
from quick import parse_args  # this folder's (run as a script)
from track_reader import TrackReader

CLI = [sys.executable, "-m", "scope_relay.cli"]
TICKS = os.sysconf("SC_CLK_TCK")
#: --quick: the owner alone, then one viewer (two rows: a slope), one-second windows
QUICK = {"viewers": 1, "seconds": 1.0}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (its threads included), seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


@contextlib.asynccontextmanager
async def process(args: list[str], ready: str, env: dict[str, str]
                  ) -> AsyncIterator[tuple[asyncio.subprocess.Process, str]]:
    """A scope-relay process, once it printed a line matching ``ready`` (its URL)."""
    proc = await asyncio.create_subprocess_exec(
        *CLI, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, **env, "PYTHONUNBUFFERED": "1"})
    assert proc.stdout is not None

    async def until_ready() -> str:
        while line := await proc.stdout.readline():  # type: ignore[union-attr]
            match = re.search(ready, line.decode(errors="replace"))
            if match:
                return match.group(1)
        raise RuntimeError(f"{args[0]} ended before serving")

    async def drain() -> None:  # keep its pipe from filling up
        while await proc.stdout.readline():  # type: ignore[union-attr]
            pass

    reader = None
    try:
        url = await asyncio.wait_for(until_ready(), 120)
        reader = asyncio.ensure_future(drain())
        yield proc, url
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        if reader is not None:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)


class Receiver(TrackReader):
    """A page or a viewer: recvonly video and audio, frames counted and dropped."""

    def __init__(self, *, owner: bool = False, undecoded: bool = False) -> None:
        super().__init__()
        if owner:  # the page's parameters channel (a viewer has none)
            self.pc.createDataChannel("parameters", ordered=True)
        self.pc.addTransceiver("video", direction="recvonly")
        self.pc.addTransceiver("audio", direction="recvonly")
        if undecoded:
            self.video_undecoded()
        self.frames = {"video": 0, "audio": 0}

    def on_frame(self, kind: str, frame: Any) -> None:
        self.frames[kind] += 1

    async def offer(self, http: httpx.AsyncClient, path: str, body: dict) -> dict:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        response = await http.post(path, json={"sdp": self.pc.localDescription.sdp,
                                               "type": "offer", **body})
        response.raise_for_status()
        data = response.json()
        await self.pc.setRemoteDescription(RTCSessionDescription(data["sdp"], "answer"))
        return data


async def window(pids: dict[str, int], seconds: float, receivers: list[Receiver]
                 ) -> tuple[dict[str, float], float]:
    """CPU share of one core per process over ``seconds``, and the slowest receiver's
    video frames per second over it."""
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    frames = [r.frames["video"] for r in receivers]
    loop = asyncio.get_running_loop()
    start = loop.time()
    await asyncio.sleep(seconds)  # the measuring window itself
    elapsed = loop.time() - start
    cpu = {name: (cpu_seconds(pid) - before[name]) / elapsed for name, pid in pids.items()}
    fps = min((r.frames["video"] - f) / elapsed for r, f in zip(receivers, frames, strict=True))
    return cpu, fps


async def main(viewers: int, seconds: float, pipeline: str,
               parameters: dict[str, Any] | None = None, *, undecoded: bool = False,
               transcode: bool = False) -> int:
    env = {"SCOPE_RELAY_ICE_LOOPBACK": "1", "SCOPE_LOG_LEVEL": "WARNING"}
    if transcode:  # the relay decodes and encodes again, as before it forwarded
        env["SCOPE_RELAY_TRANSCODE_VIDEO"] = "1"
    cloud_args = ["cloud", "--host", "127.0.0.1", "--port", "0", "--loopback-ice",
                  "--log-level", "WARNING"]
    async with process(cloud_args, r"cloud app: (ws://\S+)", env) as (cloud, ws_url), \
            process(["local", "--host", "127.0.0.1", "--port", "0", "--browser-loopback-ice",
                     "--max-viewers", str(max(viewers, 1)), "--log-level", "WARNING"],
                    r"open the page: (http://\S+?)/?\s", {**env, "SCOPE_CLOUD_WS_URL": ws_url}
                    ) as (relay, relay_url), \
            httpx.AsyncClient(base_url=relay_url, timeout=120) as http:
        pids = {"relay": relay.pid, "cloud": cloud.pid}
        owner = Receiver(owner=True, undecoded=undecoded)
        receivers = [owner]
        try:
            answer = await owner.offer(http, "/api/v1/webrtc/offer",
                                       {"initialParameters": {"pipeline_ids": [pipeline],
                                                              **(parameters or {})}})
            token = answer["shareToken"]
            await asyncio.sleep(3.0)  # warm-up: first sender reports, encoders, offset
            rows = []
            for n in range(viewers + 1):
                if n:
                    viewer = Receiver(undecoded=undecoded)
                    receivers.append(viewer)
                    await viewer.offer(http, "/api/v1/webrtc/viewer", {"shareToken": token})
                    await asyncio.sleep(2.0)  # its connection and first keyframe
                cpu, fps = await window(pids, seconds, receivers)
                rows.append((n, cpu["relay"], cpu["cloud"], fps))
                print(f"{n} extra viewer(s): relay CPU {cpu['relay'] * 100:5.1f} % of a core, "
                      f"cloud {cpu['cloud'] * 100:5.1f} %, slowest receiver {fps:4.1f} video fps",
                      flush=True)
            stats = (await http.get("/api/v1/stats")).json()["sessions"][0]
            cloud_url = ws_url.replace("ws://", "http://").removesuffix("/ws")
            async with httpx.AsyncClient(base_url=cloud_url) as cloud_http:
                cloud_sessions = len((await cloud_http.get("/api/v1/stats")).json()["sessions"])
        finally:
            for r in receivers:
                await r.close()
        counts = np.array([r[0] for r in rows], float)
        relay_cpu = np.array([r[1] for r in rows])
        slope = float(np.polyfit(counts, relay_cpu, 1)[0]) if len(rows) > 1 else float("nan")
        print(f"per extra viewer: relay CPU +{slope * 100:.1f} % of a core "
              f"(least squares over 0..{viewers}); base (owner only) {relay_cpu[0] * 100:.1f} %")
        print(f"cloud sessions: {cloud_sessions}; relay viewers: {stats['viewers']}; frames "
              f"skipped by the fan-out: video {stats['fanout_skipped_video_frames']}, audio "
              f"{stats['fanout_skipped_audio_frames']}")
        return 0 if cloud_sessions == 1 else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--viewers", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--pipeline", default="av-sync")
    parser.add_argument("--height", type=int, default=None,
                        help="stream hd-test at this height (16:9) instead of --pipeline")
    parser.add_argument("--fps", type=float, default=30.0, help="hd-test's frame rate")
    parser.add_argument("--undecoded", action="store_true",
                        help="receivers count encoded video frames instead of decoding them "
                             "(many HD viewers on a small machine)")
    parser.add_argument("--transcode", action="store_true",
                        help="the relay decodes and encodes video again (as before it "
                             "forwarded the cloud's; SCOPE_RELAY_TRANSCODE_VIDEO=1)")
    a = parse_args(parser, QUICK)
    hd = None if a.height is None else {"height": a.height, "frame_rate": a.fps}
    sys.exit(asyncio.run(main(a.viewers, a.seconds, "hd-test" if hd else a.pipeline, hd,
                              undecoded=a.undecoded, transcode=a.transcode)))
