"""The beat at Chromium's output: `beat-flash` against an Ableton Link peer, heard and seen
in the real page, and whether it drifts.

A Link peer (an ``aalink`` instance at ``--bpm``, standing in for Live or Resolume) runs on
this machine; the relay follows it (``PUT /api/v1/tempo {"source": "link"}``) and the page
(Debian's Chromium through Playwright, headless) plays ``beat-flash`` through the cloud app
and the relay, all on 127.0.0.1. Inside the page:
- clicks: an AudioWorklet tap on the <video>'s MediaStream; each onset's AudioContext time
  is mapped to ``performance.now()`` through ``getOutputTimestamp()``, i.e. when the
  sample leaves the audio output (what the page reports to the relay as its output
  latency, ``outputLatency + baseLatency``, is inside this figure). The tap is made afresh
  at each collection (its first 0.3 s not counted): its MediaStream source's buffering
  grows when the loaded machine glitches its AudioContext and never shrinks;
- flashes: ``requestVideoFrameCallback``'s ``expectedDisplayTime`` of the first bright
  frame of each flash (beat-flash at ``--fps``: 24, 30 or 60). Its callback time and
  ``presentationTime`` are kept too, to show what ``expectedDisplayTime`` adds.
The page tells the relay how long before its sound it shows a media time's picture
(``page_video_lead``, from its getStats: audio delay + output latency - video delay), and
the cloud draws the flashes that much later; with ``--no-video-lead`` the benchmark strips
it from the page's reports (the flashes are then drawn on the audio's grid, as before).
The table's "stats lead" is that figure as the page has it, compensated or not.
Every few seconds the script collects them, maps the page's clock onto this machine's wall
clock (a bracketed read of ``performance.now()``, the tightest of five) and measures each
against the Link session's own grid read at that moment (``link.beat`` at ``time.time()``,
as the relay's Link source reads it). Phase error: signed ms to the nearest beat.

It prints p50/p95 of |error| for clicks and flashes after ``--warmup``, then the median
click error per minute (per ``--bucket`` seconds) and the drift slope (ms/min, a least
squares line through every click's error).

    .venv/bin/python benchmarks/beat_phase.py [--seconds 60 | --minutes 10] [--bpm 120]
        [--warmup 10] [--fps 24|30|60] [--no-video-lead] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

import httpx
import numpy as np
from av_sync import serve  # this folder: the same way to start a server on 127.0.0.1
from page_probes import BRIGHTNESS, onsets_worklet
from quick import parse_args

from scope_relay.cloud.app import CloudConfig, create_app
from scope_relay.local.cloud_link.target import CloudTarget
from scope_relay.local.server import RelayConfig, create_relay_app
from scope_relay.protocol.tempo import TempoGrid

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from helpers.chromium import CHROMIUM, chromium_context

#: --quick: 20 s, two 10 s buckets, so every figure is printed (not meant to be read)
QUICK = {"seconds": 20.0, "warmup": 5.0, "bucket": 10.0}
#: how often the page's events are collected (and the page's clock mapped again)
COLLECT_SECONDS = 5.0

# Installs the collectors in the page: window._beat.{clicks, flashes} (performance.now ms).
INSTALL = """async () => {
  const video = document.querySelector('#video');
  const out = window._beat = {clicks: [], flashes: [], frames: []};
  const brightNow = (BRIGHTNESS)(video);
  let bright = false;
  const onFrame = (now, meta) => {
    const isBright = brightNow();
    if (isBright && !bright) {
      out.flashes.push(meta.expectedDisplayTime);
      out.frames.push([now, meta.presentationTime, meta.expectedDisplayTime]);
    }
    bright = isBright;
    video.requestVideoFrameCallback(onFrame);
  };
  video.requestVideoFrameCallback(onFrame);
  const source = ONSETS;
  const worklet = URL.createObjectURL(new Blob([source], {type: 'text/javascript'}));
  // a fresh tap each time: a MediaStream source's FIFO grows when the loaded machine makes
  // its AudioContext glitch, and never gives the delay back (seen: +95 ms for good)
  window._beatNewTap = async () => {
    const old = window._beatTap;
    const ctx = new AudioContext({sampleRate: 48000, latencyHint: 'interactive'});
    await ctx.audioWorklet.addModule(worklet);
    await ctx.resume();
    const tap = new AudioWorkletNode(ctx, 'onsets');
    ctx.createMediaStreamSource(video.srcObject).connect(tap);
    tap.connect(ctx.destination);
    tap.port.onmessage = (e) => {
      const ts = ctx.getOutputTimestamp();
      if (ts.contextTime > 0.3) out.clicks.push(ts.performanceTime + (e.data - ts.contextTime) * 1000);
    };
    window._beatTap = ctx;
    if (old) await old.close();
  };
  await window._beatNewTap();
  const ctx = window._beatTap;
  return {baseLatency: ctx.baseLatency, outputLatency: ctx.outputLatency, sampleRate: ctx.sampleRate};
}""".replace("BRIGHTNESS", BRIGHTNESS).replace("ONSETS", onsets_worklet(0.2))  # a beat > 0.2 s

# Hands over what was collected since the last call.
TAKE = """async () => { const b = window._beat;
  const out = {clicks: b.clicks, flashes: b.flashes, frames: b.frames};
  b.clicks = []; b.flashes = []; b.frames = []; await window._beatNewTap(); return out; }"""


def link_grid(link) -> TempoGrid:
    """The Link session's grid on the wall clock, read the way the relay's source reads it."""
    before = time.time()
    beat, bpm = float(link.beat), float(link.tempo)
    now = (before + time.time()) / 2
    return TempoGrid(bpm, now - beat * 60.0 / bpm)


def phase_error_ms(t: float, grid: TempoGrid) -> float:
    beat = grid.beat_at(t).beat
    return (beat - round(beat)) * grid.beat_seconds * 1000


async def page_clock(page) -> float:
    """Wall clock minus the page's ``performance.now()`` (seconds): the tightest of five
    bracketed reads."""
    best: tuple[float, float] | None = None
    for _ in range(5):
        before = time.time()
        now_ms = await page.evaluate("performance.now()")
        after = time.time()
        if best is None or after - before < best[0]:
            best = (after - before, (before + after) / 2 - now_ms / 1000)
    assert best is not None
    return best[1]


def summary(name: str, errors: list[float]) -> str:
    if not errors:
        return f"{name}: none measured"
    arr = np.array(errors)
    return (f"{name}: n={len(arr)} median {np.median(arr):+.1f} ms, |error| p50 "
            f"{np.percentile(np.abs(arr), 50):.1f} ms, p95 {np.percentile(np.abs(arr), 95):.1f} "
            f"ms, worst {arr[np.argmax(np.abs(arr))]:+.1f} ms")


async def strip_video_lead(route) -> None:
    """``--no-video-lead``: the page's tempo reports reach the relay without the picture's
    lead, so the cloud draws the flashes on the audio's grid."""
    request = route.request
    if request.method == "PUT" and request.post_data:
        body = json.loads(request.post_data)
        body.pop("page_video_lead", None)
        if not body:
            await route.fulfill(status=200, body="{}")
            return
        await route.continue_(post_data=json.dumps(body))
        return
    await route.continue_()


async def main(seconds: float, bpm: float, warmup: float, bucket: float, fps: int = 24,
               video_lead: bool = True) -> bool:
    """Run, print the figures; whether any clicks and flashes were measured."""
    import aalink
    link = aalink.Link(bpm)
    link.quantum = 4
    link.enabled = True
    try:
        began = time.monotonic()
        while float(link.beat) < 2.0:  # let "Live" run first: a newcomer adopts its session
            assert time.monotonic() - began < 10, "the Link peer did not start"
            await asyncio.sleep(0.05)
        async with serve(create_app(CloudConfig(loopback_ice=True))) as cloud, \
                serve(create_relay_app(RelayConfig(CloudTarget(cloud.ws_url),
                                                   loopback_ice=True))) as relay, \
                httpx.AsyncClient(base_url=relay.url, timeout=30) as http:
            reply = await http.put("/api/v1/tempo", json={"source": "link"})
            reply.raise_for_status()
            while True:
                state = (await http.get("/api/v1/tempo")).json()
                if state["peers"] >= 1 and state["bpm"] is not None \
                        and abs(state["bpm"] - bpm) <= 0.1:
                    break
                assert time.monotonic() - began < 20, state
                await asyncio.sleep(0.05)
            async with chromium_context() as browser:
                page = await browser.new_page()
                if not video_lead:
                    await page.route("**/api/v1/tempo", strip_video_lead)
                await page.goto(relay.url + "/")
                await page.wait_for_function(
                    "document.querySelector('#pipeline').options.length >= 4",
                    timeout=30_000)
                await page.select_option("#pipeline", "beat-flash")
                await page.click("#start")  # (the first gesture: the page reports its latency)
                await page.wait_for_function(
                    "document.querySelector('#video').srcObject?.getAudioTracks().length === 1",
                    timeout=30_000)
                await page.fill("#param-fps", str(fps))
                await page.dispatch_event("#param-fps", "change")
                tap = await page.evaluate(INSTALL)
                state = (await http.get("/api/v1/tempo")).json()
                print(f"Link peer at {bpm:g} BPM; relay: source {state['source']}, bpm "
                      f"{state['bpm']:.2f}, peers {state['peers']}, page_latency "
                      f"{state['page_latency'] * 1000:.1f} ms (the page's report, added "
                      f"to the compensation); beat-flash at {fps} fps, video lead "
                      f"{'compensated' if video_lead else 'NOT compensated'}")
                print(f"tap AudioContext: {tap['sampleRate']} Hz, baseLatency "
                      f"{tap['baseLatency'] * 1000:.1f} ms, outputLatency "
                      f"{tap['outputLatency'] * 1000:.1f} ms")
                print(f"measuring for {seconds:g} s (load {os.getloadavg()[0]:.2f}) ...",
                      flush=True)
                start = time.time()
                clicks: list[tuple[float, float]] = []  # (s since start, error ms)
                flashes: list[tuple[float, float]] = []
                # per flash: expectedDisplayTime minus the callback's time and minus
                # presentationTime (ms)
                display: list[tuple[float, float, float]] = []
                leads: list[tuple[float, float]] = []  # (s since start, ms)
                # (s since start, the page's reported latency, the relay's playout) ms
                paths: list[tuple[float, float, float]] = []
                session_id = await page.evaluate("scopeRelay.sessionId")
                while time.time() - start < seconds:
                    await asyncio.sleep(min(COLLECT_SECONDS, seconds - (time.time() - start)))
                    offset = await page_clock(page)
                    grid = link_grid(link)
                    seen = await page.evaluate(TAKE)
                    for ms in seen["clicks"]:
                        t = ms / 1000 + offset
                        clicks.append((t - start, phase_error_ms(t, grid)))
                    for ms in seen["flashes"]:
                        t = ms / 1000 + offset
                        flashes.append((t - start, phase_error_ms(t, grid)))
                    for now, presented, expected in seen["frames"]:
                        display.append((now / 1000 + offset - start, expected - now,
                                        expected - presented))
                    state = (await http.get("/api/v1/tempo")).json()
                    figures = (await http.get(f"/api/v1/webrtc/offer/{session_id}")).json()
                    paths.append((time.time() - start, state["page_latency"] * 1000,
                                  float(figures.get("playout_delay_ms") or 0.0)))
                    playout = await page.evaluate("window.scopeRelayTempo.playout")
                    if None not in playout.values():
                        # the picture's lead over the sound as the page's stats say it
                        leads.append((time.time() - start, 1000 * (
                            playout["audio"] + playout["output"] - playout["video"])))
                tap = await page.evaluate(
                    "window._beatTap && {baseLatency: window._beatTap.baseLatency, "
                    "outputLatency: window._beatTap.outputLatency}") or tap
                state = (await http.get("/api/v1/tempo")).json()
                print(f"at the end: the page reports {state['page_latency'] * 1000:.1f} ms "
                      f"(its receive side and output latency), the picture's lead "
                      f"{state['page_video_lead'] * 1000:.1f} ms (what the cloud draws "
                      f"for); the tap's own output: base "
                      f"{tap['baseLatency'] * 1000:.1f} + output "
                      f"{tap['outputLatency'] * 1000:.1f} ms")
    finally:
        link.enabled = False

    settled_clicks = [(t, e) for t, e in clicks if t >= warmup]
    settled_flashes = [(t, e) for t, e in flashes if t >= warmup]
    print(f"\nload average {os.getloadavg()[0]:.2f}; after {warmup:g} s warm-up:")
    print(summary("clicks at the audio output", [e for _, e in settled_clicks]))
    print(summary("flashes at expectedDisplayTime",
                  [e for _, e in settled_flashes]))
    if not settled_clicks or not settled_flashes:
        return False
    shown = [(a, b) for t, a, b in display if t >= warmup]
    print(f"expectedDisplayTime minus the callback's time: median "
          f"{np.median([a for a, _ in shown]):+.1f} ms; minus presentationTime: median "
          f"{np.median([b for _, b in shown]):+.1f} ms")
    print(f"flashes minus clicks (medians): "
          f"{np.median([e for _, e in settled_flashes]) - np.median([e for _, e in settled_clicks]):+.1f} ms")
    print(f"\n{'from (s)':>8}  {'clicks':>6}  {'median ms':>9}  {'p95 |ms|':>8}  "
          f"{'flashes median ms':>17}  {'page ms':>7}  {'relay playout ms':>16}  "
          f"{'stats lead ms':>13}")
    edge = 0.0
    while edge < seconds:
        part = [e for t, e in clicks if edge <= t < edge + bucket]
        lit = [e for t, e in flashes if edge <= t < edge + bucket]
        path = [(p, r) for t, p, r in paths if edge <= t < edge + bucket] or [(np.nan, np.nan)]
        lead = [v for t, v in leads if edge <= t < edge + bucket] or [np.nan]
        if part:
            print(f"{edge:8.0f}  {len(part):6d}  {np.median(part):+9.1f}  "
                  f"{np.percentile(np.abs(part), 95):8.1f}  "
                  f"{(np.median(lit) if lit else float('nan')):+17.1f}  "
                  f"{np.median([p for p, _ in path]):7.1f}  {np.median([r for _, r in path]):16.1f}  "
                  f"{np.median(lead):13.1f}")
        edge += bucket
    slopes = []
    for events in (settled_clicks, settled_flashes):
        t = np.array([t for t, _ in events])
        e = np.array([e for _, e in events])
        slopes.append((float(np.polyfit(t / 60, e, 1)[0]) if np.ptp(t) > 0 else 0.0,
                       float(np.ptp(t) / 60)))
    (clicks_slope, minutes), (flashes_slope, _) = slopes
    print(f"drift: {clicks_slope:+.2f} ms/min over {minutes:.1f} min of clicks, flashes "
          f"{flashes_slope:+.2f} ms/min (least squares through every error)")
    return True


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--minutes", type=float, help="run this long instead (drift)")
    parser.add_argument("--bpm", type=float, default=120.0)
    parser.add_argument("--warmup", type=float, default=10.0)
    parser.add_argument("--fps", type=int, default=24, choices=(24, 30, 60),
                        help="beat-flash's frame rate")
    parser.add_argument("--no-video-lead", action="store_true",
                        help="strip the page's output latency from its reports (no video "
                             "lead compensation: the flashes on the audio's grid)")
    parser.add_argument("--bucket", type=float, default=60.0,
                        help="seconds per row of the drift table")
    args = parse_args(parser, QUICK)
    if not os.path.exists(CHROMIUM):
        sys.exit("needs Debian's chromium: scripts/setup.sh --system")
    try:
        import aalink  # noqa: F401
    except ImportError:
        sys.exit("needs the tempo extra: pip install 'scope-relay[tempo]'")
    seconds = args.minutes * 60 if args.minutes else args.seconds
    sys.exit(0 if asyncio.run(main(seconds, args.bpm, args.warmup, args.bucket, args.fps,
                                   not args.no_video_lead)) else 1)
