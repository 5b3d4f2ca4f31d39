"""Camera round trip: a numbered camera through relay -> cloud `passthrough` -> relay and back.

A page stand-in sends a 30 fps camera whose every frame carries its number as a 4 x 4
grid of black and white blocks (16 bits, big enough to survive VP8), and receives the
chain's video. A frame's round trip is from the moment aiortc took it for encoding to
the moment the stand-in decoded it again with the same number: four encodes, four
decodes, two network hops each way, the relay's and the cloud's timing, and the pipeline.
The cloud app and the relay run as separate processes (as a user runs them), the
stand-in here; its receiver decodes on arrival, as a browser does.

    .venv/bin/python benchmarks/camera_loop.py [--seconds 10] [--relay-delay S]
        [--cloud-delay S] [--pipeline passthrough] [--hd] [--transcode] [--quick]

Without ``--relay-delay``/``--cloud-delay`` both processes run at their defaults.
``--hd``: a 1280x720 camera instead of 640x480. ``--transcode``: the relay decodes the
camera and encodes it again (``SCOPE_RELAY_TRANSCODE_VIDEO=1``, as before it forwarded
the camera's encoded frames). The relay's and the cloud's CPU over the window are printed
(% of one core).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from collections.abc import Sequence
from typing import Any

os.environ.setdefault("SCOPE_RELAY_ICE_LOOPBACK", "1")

import httpx
from aiortc import RTCSessionDescription
from quick import parse_args  # this folder's (run as a script)
from relay_capacity import cpu_seconds, free_port, start
from track_reader import TrackReader

from scope_relay.rtc.ice import loopback_candidates
from scope_relay.rtc.receive_path import install_receive_path
from scope_relay.testing.camera import NumberedCamera, frame_number

#: --quick: a one-second window after a one-second warm-up
QUICK = {"seconds": 1.0, "warmup": 1.0}


class LoopPage(TrackReader):
    """The page stand-in: sends the numbered camera, times each number coming back."""

    def __init__(self, width: int = 640, height: int = 480) -> None:
        super().__init__()
        self.camera = NumberedCamera(width=width, height=height)
        transceiver = self.pc.addTransceiver(self.camera, direction="sendrecv")
        install_receive_path(transceiver.receiver, "video")
        self.round_trips: list[tuple[float, float]] = []  # (when, ms)
        self.unreadable = 0
        self.first = asyncio.Event()
        self._seen: set[int] = set()

    def on_frame(self, kind: str, frame: Any) -> None:
        now = time.monotonic()
        number = frame_number(frame.to_ndarray(format="gray"))
        if number is None:
            self.unreadable += 1
            return
        sent = self.camera.sent_at.get(number)
        if sent is None or number in self._seen:
            return  # a repeat of a frame already timed
        self._seen.add(number)
        self.round_trips.append((now, (now - sent) * 1000))
        self.first.set()


async def run(seconds: float, pipeline: str = "passthrough", relay_args: Sequence[str] = (),
              cloud_args: Sequence[str] = (), warmup: float = 2.0, *, hd: bool = False,
              transcode: bool = False) -> dict[str, float] | None:
    """Print the round trip over ``seconds`` after ``warmup`` s; return its median, p90 and
    max (ms) and both processes' CPU (% of a core), None if none came back."""
    env = {**os.environ, "SCOPE_RELAY_ICE_LOOPBACK": "1", "PYTHONUNBUFFERED": "1"}
    env["SCOPE_RELAY_TRANSCODE_VIDEO"] = "1" if transcode else ""
    env.pop("SCOPE_CLOUD_API_KEY", None)
    cloud, ws_url = await start(["cloud", "--host", "127.0.0.1", "--port", "0",
                                 "--loopback-ice", "--log-level", "WARNING", *cloud_args],
                                r"cloud app: (ws://\S+)", env)
    relay, relay_url = await start(["local", "--port", str(free_port()),
                                    "--browser-loopback-ice", "--log-level", "WARNING",
                                    *relay_args],
                                   r"open the page: (http://\S+?)/?\s*$",
                                   {**env, "SCOPE_CLOUD_WS_URL": ws_url})
    page = LoopPage(*((1280, 720) if hd else (640, 480)))
    try:
        with loopback_candidates():
            await page.pc.setLocalDescription(await page.pc.createOffer())
        async with httpx.AsyncClient(base_url=relay_url, timeout=120) as http:
            reply = await http.post("/api/v1/webrtc/offer", json={
                "sdp": page.pc.localDescription.sdp, "type": "offer",
                "initialParameters": {"pipeline_ids": [pipeline]}})
            reply.raise_for_status()
            answer = reply.json()
            await page.pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))
            await asyncio.wait_for(page.first.wait(), 30)
            warm = time.monotonic() + warmup  # past the encoders' first keyframes and ramp-up
            await asyncio.sleep(warmup)
            cpu0 = {p.pid: cpu_seconds(p.pid) for p in (relay, cloud)}
            await asyncio.sleep(seconds)  # the window being measured
            cpu = {p.pid: (cpu_seconds(p.pid) - cpu0[p.pid]) / seconds * 100
                   for p in (relay, cloud)}
            stats = next((s for s in (await http.get("/api/v1/stats")).json()["sessions"]
                          if s["session"] == answer["sessionId"][:8]), None)
        trips = sorted(ms for when, ms in page.round_trips if when >= warm)
        sent = sum(1 for t in page.camera.sent_at.values() if t >= warm)
        if not trips:
            print("no numbered frame came back")
            return None
        p90 = trips[min(len(trips) - 1, int(0.9 * len(trips)))]
        print(f"camera round trip through {pipeline!r} ({len(trips)} of ~{sent} frames "
              f"timed, {page.unreadable} unreadable): median {statistics.median(trips):.0f} ms, "
              f"p90 {p90:.0f} ms, min {trips[0]:.0f} ms, max {trips[-1]:.0f} ms")
        up = (stats or {}).get("camera_uplink") or {}
        print(f"camera {page.camera.width}x{page.camera.height} "
              f"{'forwarded' if up.get('forwarding') else 'decoded and encoded again'} "
              f"at the relay: relay CPU {cpu[relay.pid]:.0f} %, cloud CPU "
              f"{cpu[cloud.pid]:.0f} % of a core")
        if stats is not None:
            print(f"relay: playout delay {stats.get('playout_delay_ms')} ms, late video "
                  f"frames {stats.get('video_late_frames')}, camera frames dropped "
                  f"{up.get('dropped')}")
        return {"median": statistics.median(trips), "p90": p90, "max": trips[-1],
                "relay_cpu": cpu[relay.pid], "cloud_cpu": cpu[cloud.pid]}
    finally:
        await page.close()
        for proc in (relay, cloud):
            proc.kill()
            await proc.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--pipeline", default="passthrough")
    parser.add_argument("--relay-delay", type=float, help="relay --playout-delay, s")
    parser.add_argument("--cloud-delay", type=float, help="cloud --cloud-playout-delay, s")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds left out first")
    parser.add_argument("--hd", action="store_true", help="a 1280x720 camera")
    parser.add_argument("--transcode", action="store_true",
                        help="the relay decodes the camera and encodes it again")
    args = parse_args(parser, QUICK)
    relay_args = [] if args.relay_delay is None else ["--playout-delay", str(args.relay_delay)]
    cloud_args: list[str] = []
    if args.cloud_delay is not None:
        cloud_args = ["--cloud-playout-delay", str(args.cloud_delay)]
    figures = asyncio.run(run(args.seconds, args.pipeline, relay_args, cloud_args, args.warmup,
                              hd=args.hd, transcode=args.transcode))
    sys.exit(0 if figures else 1)
