"""Issue 17's table in one run: start-up, latency by hop, the camera loop, CPU against the
bare-transcode floor, capacity, memory and lip sync in Chromium, each beside its floor
(or anchor) and its goal.

It runs, one after the other, the benchmarks that measure each figure (their own output
is printed as they go; the table comes last):

- ``latency.py``: offer -> first audio / video (``--trials`` fresh sessions) and cloud
  release -> relay send in steady state, cloud app and relay in this process;
- ``camera_loop.py``: the numbered camera through ``passthrough`` and back;
- ``transcode_floor.py``: one session's media decoded and re-encoded by the relay's codecs;
- ``relay_capacity.py``: N = 1, 2, 4, 8 sessions, cloud app and relay as processes: CPU,
  underruns, lip sync at the receivers, memory before and after;
- ``browser_av_sync.py``: lip sync as Chromium plays the page (skipped with
  ``--no-browser`` or without Debian's chromium).

    .venv/bin/python benchmarks/fast_and_light.py [--trials 10] [--seconds 10] [--no-browser]
        [--quick]

``--quick`` runs each of them as its own ``--quick`` does (their ``QUICK`` settings).

Everything runs on this machine: on a 2-core box the receivers, the cloud app and the
relay share the cores, so capacity and CPU figures are floors for a real deployment.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import Any

os.environ.setdefault("SCOPE_RELAY_ICE_LOOPBACK", "1")

import browser_av_sync  # this folder's (run as a script)
import camera_loop
import latency
import relay_capacity
import transcode_floor
from quick import parse_args

from scope_relay.local.server import RelayConfig

#: IS-191's window: audio may lead by 15 ms and lag by 45 ms
LEAD_LIMIT, LAG_LIMIT = -15.0, 45.0


def clean(row: dict[str, Any]) -> bool:
    """A capacity row with no underruns, no late or skipped audio and no delay raise."""
    return not any(row[k] for k in ("audio_underruns", "audio_late_ms", "audio_skipped_ms",
                                    "delay_raises"))


async def collect(trials: int, seconds: float, browser: bool, quick: bool = False
                  ) -> dict[str, Any]:
    """Run the benchmarks in turn (each as its ``--quick`` does where ``quick``)."""
    out: dict[str, Any] = {}
    lat: dict[str, Any] = latency.QUICK if quick else {"trials": trials, "seconds": seconds}
    cam: dict[str, Any] = camera_loop.QUICK if quick else {"seconds": seconds}
    floor: dict[str, Any] = transcode_floor.QUICK if quick else {"seconds": seconds}
    cap: dict[str, Any] = (relay_capacity.QUICK if quick
                           else {"sessions": [1, 2, 4, 8], "seconds": seconds})
    chromium: dict[str, Any] = browser_av_sync.QUICK if quick else {"seconds": 45.0, "warmup": 20.0}
    print("== start-up and steady latency (latency.py)", flush=True)
    out["latency"] = await latency.main(lat["trials"], lat["seconds"],
                                        RelayConfig.playout_delay, 0.1)
    print("\n== camera round trip (camera_loop.py)", flush=True)
    out["camera"] = await camera_loop.run(**cam)
    print("\n== bare transcode floor (transcode_floor.py)", flush=True)
    out["floor"] = await asyncio.to_thread(transcode_floor.floor_percent, "av-sync",
                                           floor["seconds"])
    print(f"{out['floor']:.1f} % of one core per session")
    print("\n== capacity, CPU, memory (relay_capacity.py)", flush=True)
    out["capacity"] = await relay_capacity.main(cap["sessions"], cap["seconds"],
                                                cap.get("settle", 2.0))
    if browser and os.path.exists(browser_av_sync.CHROMIUM):
        print("\n== lip sync in Chromium (browser_av_sync.py)", flush=True)
        out["browser"] = await browser_av_sync.main(chromium["seconds"], chromium["warmup"])
    return out


def table(f: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    rows: list[tuple[str, str, str, str, str]] = []
    lat = f["latency"]
    audio, video = lat.get("first_audio"), lat.get("first_video")
    if audio and video:
        met = max(audio[0], video[0]) <= 350 and max(audio[1], video[1]) <= 500
        rows.append(("offer -> first audio / video (median, max)",
                     f"{audio[0]:.0f} / {video[0]:.0f} ms (max {max(audio[1], video[1]):.0f})",
                     "bare aiortc 130 ms", "<= 350 median, <= 500 max", "yes" if met else "no"))
        cold = lat.get("cold")
        if cold and None not in cold:
            rows.append(("  a process's first session (loads the chain)",
                         f"{cold[0]:.0f} / {cold[1]:.0f} ms", "-", "-", "-"))
    if "steady_audio" in lat:
        worst = max(lat["steady_audio"], lat.get("steady_video", 0.0))
        rows.append(("cloud release -> relay send, steady",
                     f"{lat['steady_audio']:.0f} / {lat.get('steady_video', 0):.0f} ms, "
                     f"{lat['underruns']} underruns", "~50 ms (encode + net + decode)",
                     "<= 80 ms, 0 underruns",
                     "yes" if worst <= 80 and not lat["underruns"] else "no"))
    cam = f["camera"]
    if cam:
        rows.append(("camera round trip, passthrough",
                     f"{cam['median']:.0f} ms median (p90 {cam['p90']:.0f})",
                     "4 codec hops + a frame, ~70 ms", "<= 120 ms",
                     "yes" if cam["median"] <= 120 else "no"))
    cap = f["capacity"]
    by_n = {r["n"]: r for r in cap["rows"]}
    if 1 in by_n:
        ratio = by_n[1]["relay_cpu"] / f["floor"]
        rows.append(("relay CPU per session vs bare transcode",
                     f"{by_n[1]['relay_cpu']:.1f} % of a core = {ratio:.1f}x",
                     f"{f['floor']:.1f} % = 1x", "<= 3x", "yes" if ratio <= 3 else "no"))
    clean_n = max((n for n, r in by_n.items() if clean(r)), default=0)
    rows.append(("clean sessions on this box", f"{clean_n} of {max(by_n, default=0)}", "-",
                 "8", "yes" if clean_n >= 8 else "no"))
    last = cap["rows"][-1] if cap["rows"] else None
    if last:
        rows.append(("memory idle -> after N sessions closed (relay / cloud)",
                     f"{cap['idle_relay_mb']:.0f} -> {last['relay_rss_after']:.0f} / "
                     f"{cap['idle_cloud_mb']:.0f} -> {last['cloud_rss_after']:.0f} MB",
                     "idle", "near idle", "-"))
    b = f.get("browser")
    if b:
        inside = LEAD_LIMIT <= b["p5"] and b["p95"] <= LAG_LIMIT
        rows.append(("lip sync in Chromium (click - flash, net, p5..p95)",
                     f"median {b['median']:+.0f} ms, {b['p5']:+.0f}..{b['p95']:+.0f}",
                     "0", "-15..+45 ms", "yes" if inside else "no"))
        raw_inside = LEAD_LIMIT <= b["raw_p5"] and b["raw_p95"] <= LAG_LIMIT
        rows.append(("  as the tap heard it (its own output latency in)",
                     f"median {b['raw_median']:+.0f} ms, {b['raw_p5']:+.0f}..{b['raw_p95']:+.0f}",
                     "0", "-15..+45 ms", "yes" if raw_inside else "no"))
    return rows


def main(trials: int, seconds: float, browser: bool, quick: bool = False) -> int:
    figures = asyncio.run(collect(trials, seconds, browser, quick))
    rows = table(figures)
    widths = [max(len(r[k]) for r in rows + [("figure", "ours", "floor / anchor", "goal",
                                                "met")]) for k in range(5)]
    print()
    for row in [("figure", "ours", "floor / anchor", "goal", "met"), *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--no-browser", action="store_true")
    args = parse_args(parser, {})
    sys.exit(main(args.trials, args.seconds, not args.no_browser, args.quick))
