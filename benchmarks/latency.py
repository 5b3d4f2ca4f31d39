"""Start-up and steady latency through cloud app -> relay -> a receiving peer (issue 17).

Runs the real cloud app and relay on 127.0.0.1 with the `av-sync` pipeline (a flash and a
click at the same media time, once per second) and prints:

- start-up, over ``--trials`` fresh sessions after a first one (printed as ``cold``: the
  first session of a process also loads the pipeline, imports codecs and warms their
  libraries): from the receiver starting its offer to
  the relay's answer, the cloud releasing its first frame, the relay getting the first
  frame from the cloud, and the receiver's first audio and first video frame (``recv()``);
  the median and the worst of each;
- steady latency, over one further session of ``--seconds``: from the cloud releasing a
  flash (video) or click (audio) to the relay sending it on, read through the relay's RTCP
  sender reports the way a browser maps them.

    .venv/bin/python benchmarks/latency.py [--trials 10] [--seconds 10]
        [--relay-delay 0.07] [--cloud-delay 0.1] [--no-early-reports] [--phases] [--quick]

The receiver stand-in decodes what arrives at once, through the same receive path as the
relay (a browser's NetEq and video receiver do too); ``--aiortc-receiver`` keeps aiortc's
own buffers instead, which hold ~80 ms of audio and a video frame until the next one.
``--no-early-reports`` leaves aiortc to send its first sender report when it would
(0.5-1.5 s in): start-up as it was before the early reports of rtc/peer.py.
``--phases`` prints, under each trial, where its time went on both hops: each peer's ICE
and DTLS, its first DTLS/SRTP datagram and first RTP, and any retransmit timer that fired
(tests/helpers/startup_phases.py); the slowest trial's phases are printed either way.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("SCOPE_RELAY_ICE_LOOPBACK", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import httpx
import numpy as np
from aiortc import RTCSessionDescription
from quick import parse_args  # this folder's (run as a script)
from track_reader import TrackReader

from scope_relay.cloud.app import STATE_KEY, CloudConfig, create_app
from scope_relay.local.cloud_link.target import CloudTarget
from scope_relay.local.server import RELAY_KEY, RelayConfig, create_relay_app
from scope_relay.media.audio import frame_to_s16
from scope_relay.rtc import peer
from scope_relay.rtc.receive_path import install_receive_path
from scope_relay.rtc.sender_reports import SenderReportTap
from scope_relay.util.serve import serve

from helpers.startup_phases import PhaseRecorder, line

PIPELINE = "av-sync"
#: the receiver stand-in decodes on arrival, as a browser does (--aiortc-receiver: not)
PROMPT_RECEIVER = True
#: --quick: one trial after the cold one, a steady session with a few flashes
QUICK = {"trials": 1, "seconds": 3.0}


@dataclass
class Trial:
    """Milliseconds after the receiver began its offer (``None``: never seen)."""

    answer: float | None = None
    cloud_release: float | None = None
    relay_first_in: float | None = None
    first_audio: float | None = None
    first_video: float | None = None
    flashes: list[int] = field(default_factory=list)  # received video pts of flashes
    #: peer -> its start-up phases (ms), see tests/helpers/startup_phases.py
    phases: dict[str, dict[str, float]] = field(default_factory=dict)
    stalls: str = "-"  # the event loop's stalls during the start, "at+for" ms
    clicks: list[int] = field(default_factory=list)  # received audio pts of click onsets


class Receiver(TrackReader):
    """A page stand-in: recvonly audio and video, noting first frames, flashes, clicks."""

    def __init__(self, trial: Trial, began: float):
        super().__init__()
        self.trial, self.began = trial, began
        video = self.pc.addTransceiver("video", direction="recvonly").receiver
        audio = self.pc.addTransceiver("audio", direction="recvonly").receiver
        if PROMPT_RECEIVER:  # like a browser: plays what arrives (aiortc's own holds ~80 ms)
            install_receive_path(video, "video")
            install_receive_path(audio, "audio")
        self.video_tap = SenderReportTap(video, 90_000)
        self.audio_tap = SenderReportTap(audio, 48_000)
        self.first = {"audio": asyncio.Event(), "video": asyncio.Event()}
        self._bright = 0.0
        self._loud_until = -1

    def _ms(self) -> float:
        return (time.monotonic() - self.began) * 1000

    def on_frame(self, kind: str, frame: Any) -> None:
        if not self.first[kind].is_set():
            setattr(self.trial, f"first_{kind}", self._ms())
            self.first[kind].set()
        if kind == "video":
            bright = float(frame.to_ndarray(format="gray").mean())
            if bright > 128 >= self._bright:
                self.trial.flashes.append(frame.pts)
            self._bright = bright
        else:
            left = frame_to_s16(frame)[0].astype(np.int32)
            loud = np.flatnonzero(np.abs(left) > 8000)
            if len(loud) and frame.pts + loud[0] > self._loud_until:
                self.trial.clicks.append(frame.pts + int(loud[0]))
            if len(loud):
                self._loud_until = frame.pts + int(loud[-1]) + 4800


#: the peers of a trial, the page's end first
PEERS = ("receiver", "relay page side", "relay cloud side", "cloud")


async def run_trial(cloud_app: Any, relay_app: Any, relay_url: str, hold: float = 0.0,
                    recorder: PhaseRecorder | None = None) -> tuple[Trial, Receiver, Any]:
    """One session: offer, wait for both first frames (and ``hold`` s more)."""
    trial = Trial()
    if recorder is not None:
        recorder.clear()
    began = time.monotonic()
    receiver = Receiver(trial, began)
    await receiver.pc.setLocalDescription(await receiver.pc.createOffer())
    async with httpx.AsyncClient(base_url=relay_url, timeout=60) as http:
        answer = (await http.post("/api/v1/webrtc/offer", json={
            "sdp": receiver.pc.localDescription.sdp, "type": "offer",
            "initialParameters": {"pipeline_ids": [PIPELINE]}})).json()
    trial.answer = (time.monotonic() - began) * 1000
    await receiver.pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))
    await asyncio.wait_for(asyncio.gather(*(e.wait() for e in receiver.first.values())), 10)
    cloud_session = next(iter(cloud_app[STATE_KEY].sessions.values()))
    buffer = cloud_session.buffer
    if buffer is not None and buffer.epoch is not None:
        trial.cloud_release = (buffer.epoch + buffer.playout_delay - began) * 1000
    relay_session = relay_app[RELAY_KEY].sessions[answer["sessionId"]]
    arrivals = [t.first_arrival for t in relay_session.cloud._timers.values()
                if t.first_arrival is not None]
    if arrivals:  # wall clock (time.time) at the relay, moved onto monotonic
        trial.relay_first_in = (min(arrivals) - (time.time() - time.monotonic()) - began) * 1000
    if recorder is not None:
        cloud = relay_session.cloud
        pcs = (receiver.pc, relay_session.pc, cloud.pc if cloud else None, cloud_session.pc)
        trial.phases = {name: recorder.phases(pc, began) for name, pc in zip(PEERS, pcs, strict=True)}
        trial.stalls = recorder.loop_stalls(began)
    if hold:
        await asyncio.sleep(hold)  # the steady period being measured, not a synchronisation
    return trial, receiver, cloud_session


async def sessions_gone(cloud_app: Any, relay_app: Any, timeout: float = 10.0) -> None:
    """Wait until both apps have closed the previous trial's sessions."""
    async def poll() -> None:
        while cloud_app[STATE_KEY].sessions or relay_app[RELAY_KEY].sessions:
            await asyncio.sleep(0.05)
    await asyncio.wait_for(poll(), timeout)


def figure(values: list[float | None]) -> str:
    seen = [v for v in values if v is not None]
    if not seen:
        return f"{'-':>9} {'-':>9}"
    return f"{statistics.median(seen):9.0f} {max(seen):9.0f}"


def steady_latency(trial: Trial, receiver: Receiver, buffer: Any) -> dict[str, list[float]]:
    """Cloud release -> relay send, per flash and per click (ms). Flashes and clicks sit
    at whole media seconds, so each was released at ``release_time(0) + k`` for the whole
    ``k`` that puts it less than a second before the relay sent it."""
    wall_minus_monotonic = time.time() - time.monotonic()
    release0 = buffer.release_time(0.0) + wall_minus_monotonic
    out: dict[str, list[float]] = {"video": [], "audio": []}
    for kind, tap, marks in (("video", receiver.video_tap, trial.flashes),
                             ("audio", receiver.audio_tap, trial.clicks)):
        for pts in marks[1:]:  # the first may be cut by the start
            sent = tap.best_time(pts)
            if sent is not None:
                out[kind].append((sent - release0) % 1.0 * 1000)
    return out


def print_phases(trial: Trial) -> None:
    """Each peer's start-up phases, indented under the trial's row."""
    for name, phases in trial.phases.items():
        print(f"{'':>8}{name:<17} {line(phases)}", flush=True)
    print(f"{'':>8}{'loop stalls':<17} {trial.stalls} (at+for, ms)", flush=True)


async def measure(cloud_app: Any, relay_app: Any, relay_url: str, trials: int,
                  seconds: float, show_phases: bool = False) -> dict[str, Any]:
    """Print the start-up trials and the steady latency; return the figures (ms)."""
    figures: dict[str, Any] = {}
    recorder = PhaseRecorder()
    rows: list[Trial] = []
    print(f"{'trial':>5} {'answer':>7} {'cloud out':>9} {'relay in':>9} "
          f"{'audio':>7} {'video':>7}   (ms after the receiver began its offer)", flush=True)

    def cell(v: float | None, width: int) -> str:
        return f"{v:{width}.0f}" if v is not None else f"{'-':>{width}}"

    for k in range(-1, trials):  # -1: the processes' first session, printed, not counted
        with recorder:
            trial, receiver, _ = await run_trial(cloud_app, relay_app, relay_url,
                                                 recorder=recorder)
        await receiver.close()
        await sessions_gone(cloud_app, relay_app)
        if k >= 0:
            rows.append(trial)
        print(f"{'cold' if k < 0 else k:>5} {cell(trial.answer, 7)} "
              f"{cell(trial.cloud_release, 9)} {cell(trial.relay_first_in, 9)} "
              f"{cell(trial.first_audio, 7)} {cell(trial.first_video, 7)}", flush=True)
        if show_phases:
            print_phases(trial)
        if k < 0:
            figures["cold"] = (trial.first_audio, trial.first_video)
    if rows and not show_phases:  # where the slowest start spent its time
        slowest = max(rows, key=lambda t: max(t.first_audio or 0.0, t.first_video or 0.0))
        print("\nslowest trial's phases (ms after its offer began; --phases: every trial's)")
        print_phases(slowest)
    figures["phases"] = [t.phases for t in rows]
    print(f"\n{'start-up (ms)':<22} {'median':>9} {'max':>9}")
    for name in ("answer", "cloud_release", "relay_first_in", "first_audio", "first_video"):
        print(f"{name:<22} {figure([getattr(t, name) for t in rows])}")
        seen = [v for v in (getattr(t, name) for t in rows) if v is not None]
        if seen:
            figures[name] = (statistics.median(seen), max(seen))

    if seconds > 0:
        print(f"\nsteady: one session for {seconds:g} s ...", flush=True)
        trial, receiver, cloud_session = await run_trial(cloud_app, relay_app, relay_url,
                                                         hold=seconds)
        lat = steady_latency(trial, receiver, cloud_session.buffer)
        relay_stats = [s.stats() for s in relay_app[RELAY_KEY].sessions.values()]
        await receiver.close()
        print(f"{'cloud release -> relay send (ms)':<34} {'n':>4} {'median':>7} "
              f"{'p90':>7} {'max':>7}")
        for kind in ("audio", "video"):
            values = sorted(lat[kind])
            if not values:
                print(f"{kind:<34} {0:>4} {'-':>7} {'-':>7} {'-':>7}")
                continue
            p90 = values[min(len(values) - 1, int(0.9 * len(values)))]
            print(f"{kind:<34} {len(values):>4} {statistics.median(values):7.1f} "
                  f"{p90:7.1f} {values[-1]:7.1f}")
            figures[f"steady_{kind}"] = statistics.median(values)
        figures["underruns"] = sum(s["audio_underruns"] for s in relay_stats)
        for stats in relay_stats:  # what that latency cost at the relay
            print(f"relay: audio underruns {stats['audio_underruns']}, late "
                  f"{stats['audio_late_ms']:.0f} ms, extra delay {stats['extra_delay_ms']:.0f} ms"
                  f" (raised {stats['delay_raises']}x), late video frames "
                  f"{stats['video_late_frames']}")
    return figures


async def main(trials: int, seconds: float, relay_delay: float,
               cloud_delay: float, show_phases: bool = False) -> dict[str, Any]:
    cloud_app = create_app(CloudConfig(loopback_ice=True, playout_delay=cloud_delay))
    async with serve(cloud_app) as cloud:
        relay_app = create_relay_app(RelayConfig(CloudTarget(cloud.ws_url), loopback_ice=True,
                                                 playout_delay=relay_delay))
        async with serve(relay_app) as relay:
            return await measure(cloud_app, relay_app, relay.url, trials, seconds,
                                 show_phases)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--relay-delay", type=float, default=RelayConfig.playout_delay,
                        help="relay playout delay, s (default: the relay's own)")
    parser.add_argument("--cloud-delay", type=float, default=0.1, help="cloud playout delay, s")
    parser.add_argument("--no-early-reports", action="store_true")
    parser.add_argument("--phases", action="store_true",
                        help="print every trial's start-up phases, on both hops")
    parser.add_argument("--aiortc-receiver", action="store_true",
                        help="the receiver stand-in keeps aiortc's own jitter buffers")
    args = parse_args(parser, QUICK)
    PROMPT_RECEIVER = not args.aiortc_receiver
    if args.no_early_reports:
        peer.EARLY_SENDER_REPORTS = 0
    asyncio.run(main(args.trials, args.seconds, args.relay_delay, args.cloud_delay,
                     args.phases))
    sys.exit(0)
