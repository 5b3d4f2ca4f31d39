"""Lip sync as Chromium plays it: `av-sync` through cloud app -> relay -> the real page.

Starts the cloud app and the relay on 127.0.0.1, opens the page in Debian's Chromium
(Playwright, headless), starts `av-sync` (a white flash and a 1 kHz click at the same media
time, once per second) and records inside the page:
- video: every frame's ``expectedDisplayTime`` (requestVideoFrameCallback) and brightness;
- audio: an AudioWorklet tap on the same MediaStream; click onsets on the AudioContext
  clock, mapped to ``performance.now()`` through ``getOutputTimestamp()``.
It prints, per flash, click minus flash in ms (positive: sound after picture), and the
settled median net of the tap's own ``baseLatency + outputLatency`` (which the page's
``<video>`` element path does not have).

Chromium's own lip sync starts audio 130-200 ms late and converges over 5-25 s to a ~30 ms
dead band (docs/architecture.md, Measuring), and a Web Audio tap has latencies of its own
(printed), so read the figures after the warm-up and trust them for errors of ~30 ms and up.

    .venv/bin/python benchmarks/browser_av_sync.py [--seconds 45] [--warmup 20] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
from pathlib import Path

from av_sync import serve  # this folder: the same way to start a server on 127.0.0.1
from page_probes import BRIGHTNESS, onsets_worklet
from quick import parse_args

from scope_relay.cloud.app import CloudConfig, create_app
from scope_relay.local.cloud_link.target import CloudTarget
from scope_relay.local.server import RelayConfig, create_relay_app

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from helpers.chromium import CHROMIUM, chromium_context

#: --quick: a few flashes past a short warm-up (Chromium has not settled its lip sync yet)
QUICK = {"seconds": 5.0, "warmup": 2.0}

# Arms a promise for the first frame the <video> element presents after Start is clicked.
FIRST_FRAME = """() => {
  const clicked = new Promise((r) => document.querySelector('#start').addEventListener(
      'click', () => r(performance.now()), {once: true}));
  window._firstFrame = clicked.then((t0) => new Promise((resolve) => {
    const video = document.querySelector('#video');
    const wait = () => video.srcObject ? video.requestVideoFrameCallback(
        (now, meta) => resolve(meta.expectedDisplayTime - t0)) : setTimeout(wait, 10);
    wait();
  }));
}"""

# Runs in the page for `seconds`, then resolves with what it saw.
MEASURE = """async (seconds) => {
  const video = document.querySelector('#video');
  const flashes = [], clicks = [];
  const brightNow = (BRIGHTNESS)(video);
  let bright = false;
  const onFrame = (now, meta) => {
    const isBright = brightNow();
    if (isBright && !bright) flashes.push(meta.expectedDisplayTime);
    bright = isBright;
    video.requestVideoFrameCallback(onFrame);
  };
  video.requestVideoFrameCallback(onFrame);

  const ctx = new AudioContext();
  const worklet = ONSETS;
  await ctx.audioWorklet.addModule(URL.createObjectURL(new Blob([worklet], {type: 'text/javascript'})));
  const tap = new AudioWorkletNode(ctx, 'onsets');
  ctx.createMediaStreamSource(video.srcObject).connect(tap);
  tap.connect(ctx.destination);
  tap.port.onmessage = (e) => {
    const ts = ctx.getOutputTimestamp();
    clicks.push(ts.performanceTime + (e.data - ts.contextTime) * 1000);
  };
  const started = performance.now();
  await new Promise((r) => setTimeout(r, seconds * 1000));
  return {flashes, clicks, started, baseLatency: ctx.baseLatency, outputLatency: ctx.outputLatency,
          sampleRate: ctx.sampleRate};
}""".replace("BRIGHTNESS", BRIGHTNESS).replace("ONSETS", onsets_worklet(0.5))  # clicks 1 s apart


async def main(seconds: float, warmup: float) -> dict[str, float] | None:
    """Print the per-flash offsets; return the settled figures net of the tap's own
    latency (ms), None if none came."""
    async with serve(create_app(CloudConfig(loopback_ice=True))) as cloud, \
            serve(create_relay_app(RelayConfig(CloudTarget(cloud.ws_url),
                                               loopback_ice=True))) as relay:
        relay_url = relay.url
        async with chromium_context() as browser:
            page = await browser.new_page()
            await page.goto(relay_url + "/")
            await page.wait_for_function(
                "document.querySelector('#pipeline').options.length >= 4", timeout=30_000)
            await page.select_option("#pipeline", "av-sync")
            await page.evaluate(FIRST_FRAME)
            await page.click("#start")
            startup_ms = await page.evaluate("window._firstFrame")
            print(f"Start -> first picture on screen: {startup_ms:.0f} ms "
                  f"(offer, ICE, cloud hop, first sender report, playout delays)", flush=True)
            await page.wait_for_function(
                "document.querySelector('#video').srcObject?.getAudioTracks().length === 1",
                timeout=30_000)
            print(f"measuring av-sync in Chromium for {seconds:g} s ...", flush=True)
            seen = await page.evaluate(MEASURE, seconds)

    flashes, clicks, started = seen["flashes"], seen["clicks"], seen["started"]
    print(f"AudioContext: {seen['sampleRate']} Hz, baseLatency {seen['baseLatency'] * 1000:.1f} ms, "
          f"outputLatency {seen['outputLatency'] * 1000:.1f} ms (the tap's own path)")
    if not flashes or not clicks:
        print(f"nothing to compare: {len(flashes)} flashes, {len(clicks)} clicks")
        return None
    print(f"{'t (s)':>6}  {'click - flash (ms)':>18}")
    settled = []
    for flash in flashes:
        offset = min((c - flash for c in clicks), key=abs)
        if abs(offset) > 500:
            continue  # its click was not captured (start or end of the run)
        t = (flash - started) / 1000
        print(f"{t:6.1f}  {offset:18.1f}")
        if t >= warmup:
            settled.append(offset)
    if not settled:
        print("no flashes after the warm-up: run longer")
        return None
    tap_ms = (seen["baseLatency"] + seen["outputLatency"]) * 1000
    median = statistics.median(settled)
    ordered = sorted(settled)
    p5, p95 = (ordered[min(len(ordered) - 1, int(q * len(ordered)))] for q in (0.05, 0.95))
    print(f"\nafter {warmup:g} s warm-up: median {median:+.1f} ms, p5..p95 {p5:+.1f}.."
          f"{p95:+.1f} ms, worst {max(settled, key=abs):+.1f} ms over {len(settled)} flashes; "
          f"net of the tap's own {tap_ms:.0f} ms: median {median - tap_ms:+.1f} ms")
    return {"median": median - tap_ms, "p5": p5 - tap_ms, "p95": p95 - tap_ms, "tap_ms": tap_ms,
            "raw_median": median, "raw_p5": p5, "raw_p95": p95}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=45.0)
    parser.add_argument("--warmup", type=float, default=20.0)
    args = parse_args(parser, QUICK)
    if not os.path.exists(CHROMIUM):
        sys.exit("needs Debian's chromium: scripts/setup.sh --system")
    sys.exit(0 if asyncio.run(main(args.seconds, args.warmup)) else 1)
