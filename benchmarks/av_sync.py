"""A/V sync and latency over time through cloud app -> relay -> a receiving peer.

Runs the real cloud app and relay on 127.0.0.1 with the `av-sync` pipeline (a flash and a
click at the same media time, once per second) and, for every second, prints:
- the A/V offset the receiver would lip-sync to (click minus flash, both mapped to the
  relay's clock through its RTCP sender reports, as a browser does);
- the latency from the cloud releasing the flash to the relay sending it on (both
  playout delays, the network, decoding), which must not creep up.

    .venv/bin/python benchmarks/av_sync.py [--seconds 60] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time

os.environ.setdefault("SCOPE_RELAY_ICE_LOOPBACK", "1")

import httpx
import numpy as np
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError
from quick import parse_args  # this folder's (run as a script)

from scope_relay.cloud.app import STATE_KEY, CloudConfig, create_app
from scope_relay.local.cloud_link.target import CloudTarget
from scope_relay.local.server import RELAY_KEY, RelayConfig, create_relay_app
from scope_relay.media.audio import frame_to_s16
from scope_relay.rtc.ice import rtc_configuration
from scope_relay.rtc.sender_reports import SenderReportTap
from scope_relay.util.serve import serve

__all__ = ["main", "serve"]  # serve: benchmarks/browser_av_sync.py starts its servers with it

#: --quick: long enough for a few flashes, so both halves of the latency have some
QUICK = {"seconds": 4.0}


async def main(seconds: float) -> int:
    cloud_app = create_app(CloudConfig(loopback_ice=True))
    async with serve(cloud_app) as cloud:
        relay_app = create_relay_app(RelayConfig(CloudTarget(cloud.ws_url), loopback_ice=True))
        async with serve(relay_app) as relay:
            return await measure(cloud_app, relay_app, relay.url, seconds)


async def measure(cloud_app, relay_app, relay_url: str, seconds: float) -> int:
    """Receive av-sync from the relay at ``relay_url`` for ``seconds``; print the figures."""
    pc = RTCPeerConnection(rtc_configuration())
    video_tap = SenderReportTap(pc.addTransceiver("video", direction="recvonly").receiver, 90_000)
    audio_tap = SenderReportTap(pc.addTransceiver("audio", direction="recvonly").receiver, 48_000)
    flashes: list[int] = []  # received video pts of flash frames
    clicks: list[int] = []  # received audio pts of click onsets
    last = {"bright": 0.0, "loud_until": -1}

    async def consume(track):
        try:
            while True:
                frame = await track.recv()
                if track.kind == "video":
                    bright = float(frame.to_ndarray(format="gray").mean())
                    if bright > 128 >= last["bright"]:
                        flashes.append(frame.pts)
                    last["bright"] = bright
                else:
                    left = frame_to_s16(frame)[0].astype(np.int32)
                    loud = np.flatnonzero(np.abs(left) > 8000)
                    if len(loud) and frame.pts + loud[0] > last["loud_until"]:
                        clicks.append(frame.pts + int(loud[0]))
                    if len(loud):
                        last["loud_until"] = frame.pts + int(loud[-1]) + 4800
        except MediaStreamError:
            pass

    tasks = []
    pc.on("track", lambda track: tasks.append(asyncio.ensure_future(consume(track))))
    await pc.setLocalDescription(await pc.createOffer())
    async with httpx.AsyncClient(base_url=relay_url, timeout=60) as http:
        answer = (await http.post("/api/v1/webrtc/offer", json={
            "sdp": pc.localDescription.sdp, "type": "offer",
            "initialParameters": {"pipeline_ids": ["av-sync"]}})).json()
    await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))
    (session,) = relay_app[RELAY_KEY].sessions.values()
    (cloud_session,) = cloud_app[STATE_KEY].sessions.values()
    print(f"running av-sync for {seconds:g} s ...", flush=True)
    await asyncio.sleep(seconds)  # the measurement period itself

    buffer = cloud_session.buffer  # the cloud's one media clock (monotonic)
    wall_minus_monotonic = time.time() - time.monotonic()
    offsets, latencies, uncovered = [], [], 0
    print(f"{'flash':>5} {'A/V offset ms':>14} {'cloud->receiver latency ms':>27}")
    # clicks on the relay's clock; none can be placed before the audio's first sender report
    click_times = [t for c in clicks if (t := audio_tap.best_time(c)) is not None]
    for k, pts in enumerate(flashes):
        flash_t = video_tap.best_time(pts)
        if flash_t is None or not click_times:
            continue
        offset = min((t - flash_t for t in click_times), key=abs) * 1000
        if abs(offset) > 500:  # no audio under this flash yet: the picture starts first
            uncovered += 1
            continue
        # flashes are at whole media seconds: the cloud released this one at
        # release_time(m) for the m that puts it less than a second before the relay sent it
        latency = (flash_t - (buffer.release_time(0.0) + wall_minus_monotonic)) % 1.0 * 1000
        offsets.append(offset)
        latencies.append(latency)
        print(f"{k:>5} {offset:14.1f} {latency:27.1f}")
    if len(offsets) < 2:
        print(f"\nonly {len(offsets)} flash(es) with sound under them: run longer")
        status = 1
    else:
        half = len(latencies) // 2
        first, second = statistics.median(latencies[:half]), statistics.median(latencies[half:])
        print(f"\nA/V offset: median {statistics.median(offsets):.1f} ms, "
              f"worst {max(offsets, key=abs):.1f} ms over {len(offsets)} flashes "
              f"({uncovered} shown before the first sound, left out)")
        print(f"latency: first half median {first:.1f} ms, second half median {second:.1f} ms "
              f"(creep {second - first:+.1f} ms)")
        status = 0
    stats = session.stats()
    print(f"relay: offset {stats['offset_ms']} ms, playout delay {stats['playout_delay_ms']} ms "
          f"(extra {stats['extra_delay_ms']} ms), underruns {stats['audio_underruns']}, "
          f"late audio {stats['audio_late_ms']} ms; cloud: {cloud_session.buffer.stats()}")
    for task in tasks:
        task.cancel()
    await pc.close()
    return status


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    sys.exit(asyncio.run(main(parse_args(parser, QUICK).seconds)))
