"""A keyframe asked for by the page, stage by stage (issue 27: within one cloud-hop round
trip plus one frame interval).

The cloud app and the relay run as separate processes (as a user runs them); a receiver
here stands in for the page, its video arriving as encoded frames (our receive path's
``forward_video``: nothing decoded). After a settling time (the cloud's encoder starts at
a quarter of its ceiling and climbs as receiver reports allow, and a keyframe's size
follows the rate) it sends ``--plis`` PLIs, spaced out at random (so each falls at
another point of the frame interval), each once the keyframe answering the last has
come. Per request, on the host's one monotonic clock (the cloud's and relay's stats
expose their timestamps on it):

- relay: the PLI reaches the relay and it sends one upstream (``keyframes_upstream``);
- up: the cloud's sender gets it (``video_send.forced_keyframes_monotonic``);
- next frame: until the encoder starts on the next frame, now a keyframe;
- encode: the keyframe's encode;
- pacer: until its last packet leaves the cloud's pacer (``pacer_keyframes_sent_monotonic``);
- down: until the relay has it whole (``keyframes_upstream``, answered);
- relay out: until the receiver here has it whole;
- total: the PLI sent here -> the keyframe complete here.

A request a keyframe already queued at the relay answered, or a periodic keyframe,
has no cloud stages; it counts in the total only.

    .venv/bin/python benchmarks/keyframe_latency.py [--height 720 1080] [--fps 30]
        [--codec vp8|h264|both] [--plis 12] [--settle 10] [--quick]

``--quick``: 360 lines, VP8, 3 PLIs after 1 s (the suite's smoke test).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import random
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
from aiortc import RTCPeerConnection
from quick import parse_args  # this folder's (run as a script)
from relay_capacity import offer_hd_test, start_pair

from scope_relay.cloud.builtin_pipelines.hd_test import frame_size
from scope_relay.rtc import aiortc_internals as internals
from scope_relay.rtc.ice import rtc_configuration
from scope_relay.rtc.receive_path import EncodedVideo, install_receive_path

QUICK = {"height": [360], "codec": "vp8", "plis": 3, "settle": 1.0}
STAGES = ("relay", "up", "next frame", "encode", "pacer", "down", "relay out", "total")


@dataclass
class Request:
    """One PLI's timestamps (s, monotonic); ``None`` where a stage did not happen."""

    sent: float
    received: float  # the keyframe complete at the receiver
    stages: dict[str, float] = field(default_factory=dict)


def first_after(values: list[Any], when: float, key: Any = lambda v: v) -> Any:
    return next((v for v in sorted(values, key=key) if key(v) >= when), None)


def split(request: Request, relay: list[list[float]], forced: list[list[Any]],
          paced: list[float]) -> str | None:
    """Fill ``request.stages`` from the relay's and the cloud's timelines; why not, if not."""
    request.stages["total"] = request.received - request.sent
    row = first_after(relay, request.sent, key=lambda r: r[0])
    if row is None or row[2] > request.received:
        return "answered at the relay (a keyframe queued there)"
    asked, upstream, at_relay = row
    kf = first_after([f for f in forced if f[0] is not None], upstream, key=lambda f: f[0])
    if kf is None or kf[2] > at_relay:
        return "answered by a keyframe this request did not force"
    cloud_asked, started, encoded = kf[0], kf[1], kf[2]
    left = first_after(paced, encoded)
    if left is None or left > at_relay:
        return "its last packet's departure not found"
    request.stages.update({
        "relay": upstream - request.sent, "up": cloud_asked - upstream,
        "next frame": started - cloud_asked, "encode": encoded - started,
        "pacer": left - encoded, "down": at_relay - left,
        "relay out": request.received - at_relay})
    request.stages["bytes"] = kf[3]
    request.stages["packets"] = kf[4]
    return None


async def session_stats(url: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        sessions = (await http.get("/api/v1/stats")).json().get("sessions") or []
    return sessions[0] if sessions else {}


async def run(height: int, fps: float, codec: str, plis: int, settle: float) -> dict:
    """One session, ``plis`` requests measured."""
    width, height = frame_size(height)
    env = {**os.environ, "SCOPE_RELAY_ICE_LOOPBACK": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("SCOPE_CLOUD_API_KEY", None)
    cloud, cloud_url, relay, relay_url = await start_pair(env, ["--video-codec", codec], [])
    pc = RTCPeerConnection(rtc_configuration())
    keyframes: list[float] = []
    frames = 0
    arrived = asyncio.Event()

    def on_frame(frame: EncodedVideo) -> None:
        nonlocal frames
        frames += 1
        if frame.keyframe:
            keyframes.append(time.monotonic())
            arrived.set()

    try:
        transceiver = pc.addTransceiver("video", direction="recvonly")
        path = install_receive_path(transceiver.receiver, "video")
        path.forward_video(on_frame, lambda mime: True)
        await offer_hd_test(pc, relay_url, height, fps)
        await asyncio.wait_for(arrived.wait(), 60)  # the first keyframe
        await asyncio.sleep(settle)  # the encoder's rate climbs: a measured window follows
        requests: list[Request] = []
        for _ in range(plis):
            await asyncio.sleep(random.uniform(0.4, 0.7))  # spacing, not synchronisation
            arrived.clear()
            sent = time.monotonic()
            assert path.media_ssrc is not None
            await internals.send_pli(transceiver.receiver, path.media_ssrc)
            await asyncio.wait_for(arrived.wait(), 5)
            requests.append(Request(sent, first_after(keyframes, sent)))
        relay_stats = await session_stats(relay_url)
        cloud_stats = await session_stats(cloud_url)
    finally:
        await pc.close()
        for proc in (relay, cloud):
            proc.kill()
            await proc.wait()
    upstream = relay_stats.get("keyframes_upstream") or {}
    send = cloud_stats.get("video_send") or {}
    unsplit: collections.Counter[str] = collections.Counter()
    for request in requests:
        why = split(request, upstream.get("timeline_monotonic", []),
                    send.get("forced_keyframes_monotonic", []),
                    send.get("pacer_keyframes_sent_monotonic", []))
        if why:
            unsplit[why] += 1
    return {"codec": codec, "width": width, "height": height, "fps": fps,
            "requests": requests, "unsplit": unsplit, "frames": frames, "send": send}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def report(result: dict) -> None:
    requests: list[Request] = result["requests"]
    send = result["send"]
    target, pacing = send.get("target_bitrate"), send.get("pacing_bitrate")
    rate = "-" if target is None or pacing is None else \
        f"{target / 1e6:.2f} Mb/s (paced at {pacing / 1e6:.2f})"
    print(f"\n## {result['codec']} {result['width']}x{result['height']} @ {result['fps']:g} fps: "
          f"{len(requests)} PLIs; the cloud's encoder at the end: target {rate}, "
          f"{send.get('send_width')}x{send.get('send_height')} @ {send.get('send_fps')} fps, "
          f"{send.get('frames_skipped')} frames skipped, "
          f"{send.get('frames_pushed_back')} pushed back")
    print(f"{'stage (ms)':<14} {'n':>3} {'median':>8} {'p90':>8} {'max':>8}")
    for stage in STAGES:
        values = [r.stages[stage] * 1000 for r in requests if stage in r.stages]
        if not values:
            print(f"{stage:<14} {0:>3} {'-':>8} {'-':>8} {'-':>8}")
            continue
        print(f"{stage:<14} {len(values):>3} {statistics.median(values):>8.1f} "
              f"{percentile(values, 0.9):>8.1f} {max(values):>8.1f}")
    sizes = [r.stages["bytes"] for r in requests if "bytes" in r.stages]
    packets = [r.stages["packets"] for r in requests if "packets" in r.stages]
    if sizes:
        print(f"keyframe size: median {statistics.median(sizes) / 1000:.1f} kB in "
              f"{statistics.median(packets):.0f} packets")
    trips = [(r.stages["up"] + r.stages["down"]) * 1000 for r in requests if "up" in r.stages]
    rtt = statistics.median(trips) if trips else 0.0
    totals = [r.stages["total"] * 1000 for r in requests]
    print(f"total: median {statistics.median(totals):.1f} ms, p90 {percentile(totals, 0.9):.1f} ms "
          f"(goal: cloud-hop RTT (up + down) {rtt:.1f} + a frame = {rtt + 1000 / result['fps']:.1f} ms)")
    print(f"{len(trips)} of {len(requests)} split in stages"
          + "".join(f"; {n} {why}" for why, n in result["unsplit"].items()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--height", type=int, nargs="+", default=[720, 1080],
                        help="picture heights (16:9), one session each")
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--codec", choices=("vp8", "h264", "both"), default="both")
    parser.add_argument("--plis", type=int, default=12, help="requests per session")
    parser.add_argument("--settle", type=float, default=10.0,
                        help="seconds of streaming before the first request")
    args = parse_args(parser, QUICK, argv)
    codecs = ["vp8", "h264"] if args.codec == "both" else [args.codec]
    print(f"load average {os.getloadavg()[0]:.1f} at the start")
    for codec in codecs:
        for height in args.height:
            report(asyncio.run(run(height, args.fps, codec, args.plis, args.settle)))
    print(f"load average {os.getloadavg()[0]:.1f} at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
