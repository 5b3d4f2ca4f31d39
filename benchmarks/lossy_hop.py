"""What packet loss and jitter on the cloud hop do today: the loss lab's baseline.

Runs ``scope-relay cloud`` in a network namespace behind an impaired veth
(tests/helpers/losslab.py: netem where the kernel has it, else NFQUEUE and a small
drop/delay daemon), the relay in this process, and a receiving peer on 127.0.0.1 (its own
hop clean). Per profile: a fresh relay session on ``av-sync`` (a flash and a 1 kHz click
once per second), ``--before`` s on the path's round trip alone (a real path's delay is
there from the start, before the session), ``--during`` s impaired, ``--after`` s on the
round trip again. Printed per profile:

- audio lost at the relay during the impairment: the relay's ``audio_gap_ms`` (holes filled
  with silence) + ``audio_late_ms`` (arrived after its release time, dropped) +
  ``audio_reset_ms``, in ms and % of the impaired time (``GET /api/v1/webrtc/offer/{id}``);
- concealed ms (libopus packet-loss concealment) and FEC-recovered packets (Opus in-band
  FEC from the next packet), and packets recovered by retransmission (NACK), from the
  relay's receive path (``receive.audio`` in the session stats);
- video freezes at the receiver from the impairment's start to the run's end: gaps over
  100 ms between received frames (24 fps: 42 ms apart), count and longest;
- relay latency, cloud release -> relay send: the relay's ``offset_ms + playout_delay_ms``
  (median of 4 samples a second), before / during / in the last 3 s after;
- A/V offset at the receiver (click minus flash, both through the relay's sender reports,
  as benchmarks/av_sync.py does): median and worst from the impairment's start on;
- what the impairment did: packets seen, dropped (by loss or a full bottleneck queue) and
  reordered by the lab; the 1-minute load average when the profile ended.

Profiles (:data:`PROFILES`): the first lab's, on a ~1 ms round trip, and real paths: a
round trip on both directions with jitter, random or bursty (Gilbert-Elliott) loss,
bottlenecks with drop-tail queues, mid-stream changes (a ceiling that drops from 8 to
2 Mb/s, loss that starts and stops) and a 10 s outage; ``--profiles key`` runs the issue's.
``--pipeline tone`` streams a continuous tone instead of av-sync's clicks (what
concealment and FEC are heard on; no video, no A/V column); ``hd15`` / ``hd30`` stream a
tone with ``hd-test``'s 1280x720 picture at 15 / 30 fps (the ceiling profiles' own
pipeline). For the ceiling profiles the cloud's own figures are sampled too (its
``/api/v1/stats`` over the veth: the video's target rate, the bandwidth estimate, the
pacer's queue delay, the frame rate and size sent) and printed in a third table: how
long until the video fits under the ceiling, frames and the longest freeze after 5 s,
and how long the rate takes to climb back once the ceiling lifts.

    sudo .venv/bin/python benchmarks/lossy_hop.py [--during 20] [--profiles key] [--quick]

Needs root, Linux namespaces, and ``tc netem`` or iptables NFQUEUE + ``NetfilterQueue``;
exits 2 where the lab cannot run, 1 if a profile failed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# the cloud hop crosses the veth: no loopback-only ICE there (the browser hop is
# restricted on its own, below)
os.environ.pop("SCOPE_RELAY_ICE_LOOPBACK", None)
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import httpx
import numpy as np
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError
from quick import parse_args  # this folder's (run as a script)

from scope_relay.local.cloud_link.target import CloudTarget
from scope_relay.local.server import RelayConfig, create_relay_app
from scope_relay.media.audio import frame_to_s16
from scope_relay.rtc.ice import loopback_candidates, rtc_configuration
from scope_relay.rtc.sender_reports import SenderReportTap
from scope_relay.util.serve import serve

from helpers.losslab import Impairment, LabUnavailable, LossLab

FREEZE_S = 0.1



@dataclass(frozen=True)
class Profile:
    """A path for the impaired window: ``down`` (cloud -> relay) and ``up`` (relay ->
    cloud) from its start; ``steps`` change them ``at`` seconds into it (a mid-stream
    change); ``freeze`` stops the cloud process instead (the hop stays clean)."""

    what: str
    down: Impairment
    up: Impairment = field(default_factory=Impairment)
    steps: tuple[tuple[float, Impairment, Impairment], ...] = ()
    freeze: bool = False
    #: the pipeline this profile is measured on (None: ``--pipeline``)
    pipeline: str | None = None
    #: the impairment is there from before the session (a ceiling from the start)
    from_start: bool = False

    @property
    def rtt_ms(self) -> float:
        return self.down.delay_ms + self.up.delay_ms

    def base(self) -> tuple[Impairment, Impairment]:
        """The path outside the impaired window: its delay and jitter, no loss or ceiling
        (a path's round trip is there from the start; only what goes wrong comes and goes)."""
        def keep(imp: Impairment) -> Impairment:
            return Impairment(delay_ms=imp.delay_ms, jitter_ms=imp.jitter_ms,
                              reorder=imp.reorder)
        return keep(self.down), keep(self.up)


def _path(one_way_ms: float, jitter_ms: float = 0.0, *, reorder: bool = False,
          up_ms: float | None = None, **down: float) -> dict:
    """Delay both ways (``up_ms``: an asymmetric return), jitter on both, the rest down."""
    return {"down": Impairment(delay_ms=one_way_ms, jitter_ms=jitter_ms, reorder=reorder,
                               **down),
            "up": Impairment(delay_ms=one_way_ms if up_ms is None else up_ms,
                             jitter_ms=jitter_ms, reorder=reorder)}


PROFILES: dict[str, Profile] = {
    # the first lab's profiles: ~1 ms round trip
    "0%": Profile("a clean hop", Impairment()),
    "1%": Profile("random loss, no delay", Impairment(loss=0.01)),
    "5%": Profile("random loss, no delay", Impairment(loss=0.05)),
    "10%": Profile("random loss, no delay", Impairment(loss=0.10)),
    "30+-10ms": Profile("jitter one way", Impairment(delay_ms=30, jitter_ms=10)),
    "2%+20+-15ms+reorder": Profile("loss and reordering one way",
                                   Impairment(loss=0.02, delay_ms=20, jitter_ms=15)),
    # real paths: a round trip, loss as it comes, bottlenecks
    "rtt80-1%": Profile("the goal's 1 %: 40 ms each way +-5, random loss",
                        **_path(40, 5, loss=0.01)),
    "rtt80-5%": Profile("the goal's 5 %", **_path(40, 5, loss=0.05)),
    "rtt80-2%burst3": Profile("the goal's bursts: 2 %, mean 3 packets",
                              **_path(40, 5, loss=0.02, burst=3)),
    "broadband": Profile("good broadband: 12 ms each way +-2, 0.1 % loss",
                         **_path(12, 2, loss=0.001)),
    "busy-wifi": Profile("busy Wi-Fi: 25 ms each way +-12 reordering, 3 % in bursts of 4",
                         **_path(25, 12, reorder=True, loss=0.03, burst=4)),
    "hotel": Profile("hotel: 30 ms each way, 1 Mb/s down through a 200 ms queue, 1 % loss",
                     **_path(30, 3, loss=0.01, rate_kbps=1000, queue_ms=200)),
    "phone-tether": Profile("phone tether: 60 ms down / 40 up +-20, 3 Mb/s, 300 ms queue, "
                            "1 % in bursts of 2",
                            **_path(60, 20, up_ms=40, loss=0.01, burst=2, rate_kbps=3000,
                                    queue_ms=300)),
    "transatlantic": Profile("transatlantic: 45 ms each way +-3, 0.5 % loss",
                             **_path(45, 3, loss=0.005)),
    "ceiling-8to2": Profile(
        "8 Mb/s ceiling, 2 Mb/s from 10 s in (200 ms queues), 30 ms each way",
        **_path(30, 2, rate_kbps=8000),
        steps=((10.0, _path(30, 2, rate_kbps=2000)["down"], _path(30, 2)["up"]),)),
    "ceiling-1M-hd15": Profile(
        "1 Mb/s from the start (200 ms queue, 30 ms each way) under 720p15 (~1.7 Mb/s)",
        **_path(30, 2, rate_kbps=1000), pipeline="hd15", from_start=True),
    "ceiling-2M-hd30": Profile(
        "2 Mb/s from the start (200 ms queue, 30 ms each way) under 720p30 (~2.8 Mb/s)",
        **_path(30, 2, rate_kbps=2000), pipeline="hd30", from_start=True),
    "ceiling-8to2-hd30": Profile(
        "720p30: 8 Mb/s ceiling, 2 Mb/s from 10 s in (200 ms queues), 30 ms each way",
        **_path(30, 2, rate_kbps=8000),
        steps=((10.0, _path(30, 2, rate_kbps=2000)["down"], _path(30, 2)["up"]),),
        pipeline="hd30"),
    "ceiling-3M-hd15": Profile(
        "a ceiling above the stream: 3 Mb/s (200 ms queue, 30 ms each way) under 720p15",
        **_path(30, 2, rate_kbps=3000), pipeline="hd15"),
    "ceiling-below": Profile(
        "a ceiling below av-sync's ~95 kb/s: 64 kb/s through a 200 ms queue, 30 ms each way",
        **_path(30, 2, rate_kbps=64)),
    "loss-on-off": Profile(
        "40 ms each way; 5 % loss from 5 s to 15 s in",
        **_path(40, 5),
        steps=((5.0, _path(40, 5, loss=0.05)["down"], _path(40, 5)["up"]),
               (15.0, _path(40, 5)["down"], _path(40, 5)["up"]))),
    "outage-10s": Profile(
        "30 ms each way; nothing gets through either way for 10 s",
        down=Impairment(delay_ms=30, loss=1.0), up=Impairment(delay_ms=30, loss=1.0),
        steps=((10.0, _path(30)["down"], _path(30)["up"]),)),
    # not a network profile: the cloud process stopped (SIGSTOP) for 3 s (``--freeze``) at
    # the start of the impaired window, then running again; the hop itself stays clean
    "3s-freeze": Profile("the cloud process stopped", Impairment(), freeze=True),
}
#: the issue's key profiles (``--profiles key``)
KEY_PROFILES = ("rtt80-1%", "rtt80-5%", "rtt80-2%burst3", "busy-wifi", "hotel",
                "transatlantic", "outage-10s")
#: the ceiling profiles (``--profiles ceilings``)
CEILING_PROFILES = ("ceiling-1M-hd15", "ceiling-2M-hd30", "ceiling-8to2-hd30",
                    "ceiling-3M-hd15", "ceiling-below", "ceiling-8to2")
CLOUD_FREEZE_S = 3.0
#: --quick: one network profile and the freeze (the two ways a window is impaired), short
QUICK = {"before": 1.0, "during": 2.0, "after": 1.0, "profiles": "5%,3s-freeze", "freeze": 1.0}
#: the audio pipeline: av-sync's clicks (with its flashes: A/V), or a continuous tone
#: (what concealment and FEC are heard on)
PIPELINES: dict[str, dict[str, Any]] = {
    "av-sync": {"pipeline_ids": ["av-sync"]},
    "tone": {"pipeline_ids": ["test-tone"], "interval": 1.0, "duration": 1.0,
             "frequency": 440.0, "volume": 0.5},
    "hd15": {"pipeline_ids": ["test-tone", "hd-test"], "interval": 1.0, "duration": 1.0,
             "frequency": 440.0, "volume": 0.5, "height": 720, "frame_rate": 15.0},
    "hd30": {"pipeline_ids": ["test-tone", "hd-test"], "interval": 1.0, "duration": 1.0,
             "frequency": 440.0, "volume": 0.5, "height": 720, "frame_rate": 30.0},
}


class Receiver:
    """The browser stand-in: receives av-sync from the relay on 127.0.0.1 and notes the
    arrival of every video frame, and each flash and click (pts, arrival)."""

    def __init__(self, video: bool = True, flashes: bool = True) -> None:
        self.pc = RTCPeerConnection(rtc_configuration())
        self.video = video
        self.flashes_on = flashes  # (av-sync's; looking for them costs a 720p stream CPU)
        self.video_tap = SenderReportTap(
            self.pc.addTransceiver("video", direction="recvonly").receiver,
            90_000) if video else None
        self.audio_tap = SenderReportTap(
            self.pc.addTransceiver("audio", direction="recvonly").receiver, 48_000)
        self.video_arrivals: list[float] = []
        self.audio_frames = 0
        self.flashes: list[tuple[int, float]] = []  # (video pts, arrival)
        self.clicks: list[int] = []  # audio pts of click onsets
        self._bright = 0.0
        self._loud_until = -1
        self._tasks: list[asyncio.Task] = []
        self.session_id = ""
        self.pc.on("track", lambda t: self._tasks.append(asyncio.ensure_future(self._consume(t))))

    async def _consume(self, track) -> None:
        try:
            while True:
                frame = await track.recv()
                now = time.monotonic()
                if track.kind == "video":
                    self.video_arrivals.append(now)
                    if not self.flashes_on:
                        continue
                    bright = float(frame.to_ndarray(format="gray").mean())
                    if bright > 128 >= self._bright:
                        self.flashes.append((frame.pts, now))
                    self._bright = bright
                else:
                    self.audio_frames += 1
                    left = frame_to_s16(frame)[0].astype(np.int32)
                    loud = np.flatnonzero(np.abs(left) > 8000)
                    if len(loud) and frame.pts + loud[0] > self._loud_until:
                        self.clicks.append(frame.pts + int(loud[0]))
                    if len(loud):
                        self._loud_until = frame.pts + int(loud[-1]) + 4800
        except MediaStreamError:
            pass

    async def connect(self, relay_url: str, initial: dict) -> None:
        with loopback_candidates():  # the receiver's own hop: 127.0.0.1 only
            await self.pc.setLocalDescription(await self.pc.createOffer())
        async with httpx.AsyncClient(base_url=relay_url, timeout=60) as http:
            response = await http.post("/api/v1/webrtc/offer", json={
                "sdp": self.pc.localDescription.sdp, "type": "offer",
                "initialParameters": initial})
            response.raise_for_status()
            answer = response.json()
        self.session_id = answer["sessionId"]
        await self.pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))

    def freezes(self, since: float) -> list[float]:
        times = [t for t in self.video_arrivals if t >= since - 1.0]
        gaps = [b - a for a, b in zip(times, times[1:], strict=False) if b >= since]
        return [g for g in gaps if g > FREEZE_S]

    def av_offsets(self, since: float) -> list[float]:
        """Click minus flash (ms) for every flash received since ``since`` with a click
        within 500 ms of it (a flash whose click was lost is left out)."""
        out: list[float] = []
        if self.video_tap is None:
            return out
        click_times = [t for t in map(self.audio_tap.best_time, self.clicks) if t is not None]
        for pts, arrival in self.flashes:
            flash_t = self.video_tap.best_time(pts)
            if arrival < since or flash_t is None or not click_times:
                continue
            nearest = min(click_times, key=lambda c: abs(c - flash_t))
            if abs(nearest - flash_t) < 0.5:
                out.append((nearest - flash_t) * 1000)
        return out

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await self.pc.close()


@dataclass
class Samples:
    """The relay's session stats, sampled: (monotonic time, stats)."""

    rows: list[tuple[float, dict]] = field(default_factory=list)

    def at(self, t: float) -> dict:
        """The last sample taken at or before ``t``."""
        best = self.rows[0][1]
        for when, stats in self.rows:
            if when > t:
                break
            best = stats
        return best

    def latencies(self, start: float, end: float) -> list[float]:
        return [s["offset_ms"] + s["playout_delay_ms"] for t, s in self.rows
                if start <= t <= end and s.get("offset_ms") is not None]

    def recovery(self, since: float, baseline: float | None, within: float = 20.0) -> float | None:
        """Seconds from ``since`` until the latency is back within ``within`` ms of
        ``baseline`` for good (None: not by the last sample)."""
        if baseline is None:
            return None
        back: float | None = None
        for t, s in self.rows:
            if t < since or s.get("offset_ms") is None:
                continue
            if abs(s["offset_ms"] + s["playout_delay_ms"] - baseline) <= within:
                back = t if back is None else back
            else:
                back = None
        return None if back is None else max(0.0, back - since)


def lost_ms(stats: dict) -> float:
    return (stats.get("audio_gap_ms", 0.0) + stats.get("audio_late_ms", 0.0)
            + stats.get("audio_reset_ms", 0.0))


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


async def run_profile(lab: LossLab, name: str, before: float, during: float,
                      after: float, freeze: float = CLOUD_FREEZE_S,
                      pipeline: str = "av-sync") -> dict:
    profile = PROFILES[name]
    pipeline = profile.pipeline or pipeline
    # before the session: its offset is measured on this path (a ceiling from the start:
    # there already)
    lab.apply(*((profile.down, profile.up) if profile.from_start else profile.base()))
    relay_app = create_relay_app(RelayConfig(CloudTarget(lab.ws_url), loopback_ice=True))
    samples = Samples()
    cloud = Samples()
    receiver = Receiver(video=pipeline != "tone", flashes=pipeline == "av-sync")
    cloud_url = lab.http_url
    async with serve(relay_app) as relay, httpx.AsyncClient(base_url=relay.url,
                                                            timeout=10) as http:
        sampler: asyncio.Task | None = None
        try:
            await receiver.connect(relay.url, PIPELINES[pipeline])
            deadline = time.monotonic() + 45
            while not (receiver.audio_frames and (
                    not receiver.video or profile.from_start or (receiver.video_arrivals and (
                        receiver.clicks or not receiver.flashes_on)))):
                if time.monotonic() > deadline:
                    raise RuntimeError("no media at the receiver within 45 s")
                await asyncio.sleep(0.1)
            t_media = time.monotonic()
            sampler = asyncio.create_task(sample_cloud(cloud_url, cloud))
            await asyncio.sleep(1.0)  # past the relay's start-up

            async def sample_until(end: float) -> None:
                while time.monotonic() < end:
                    response = await http.get(f"/api/v1/webrtc/offer/{receiver.session_id}")
                    if response.status_code == 200:
                        samples.rows.append((time.monotonic(), response.json()))
                    await asyncio.sleep(0.25)

            t0 = time.monotonic()
            await sample_until(t0 + before)
            impairment_end = None
            lab_before = lab.stats()["down"]
            t1 = time.monotonic()
            if profile.freeze:
                lab.freeze_cloud()
                await sample_until(t1 + freeze)
                lab.thaw_cloud()
                impairment_end = time.monotonic()
            else:
                lab.apply(profile.down, profile.up)
                for at, down, up in profile.steps:
                    await sample_until(t1 + at)
                    lab.apply(down, up)
                    if profile.down.loss >= 1 and impairment_end is None:
                        impairment_end = time.monotonic()  # (an outage's end)
            await sample_until(t1 + during)
            lab.apply(*profile.base())
            t2 = time.monotonic()
            lab_during = lab.stats()["down"]
            await sample_until(t2 + after)
            t3 = time.monotonic()
        finally:
            if sampler is not None:
                sampler.cancel()
            await receiver.close()
    s1, s2, s3 = samples.at(t1), samples.at(t2), samples.at(t3)
    freezes = receiver.freezes(t1)
    offsets = receiver.av_offsets(t1)
    onset = t_media if profile.from_start else t1 + (profile.steps[0][0] if (
        profile.steps and profile.down.rate_kbps and profile.down.loss < 1) else 0.0)
    ceiling = ceiling_figures(profile, receiver, samples, cloud, onset, t1, t2, t3)
    if os.environ.get("LOSSY_HOP_DUMP"):  # every sample, for a closer look
        Path(os.environ["LOSSY_HOP_DUMP"], f"{name}.json").write_text(json.dumps({
            "t": [t1, t2, t3, onset], "cloud": cloud.rows, "relay": samples.rows,
            "video": receiver.video_arrivals}))
    return ceiling | {
        "profile": name,
        "rtt_ms": profile.rtt_ms,
        "lost_ms": lost_ms(s2) - lost_ms(s1),
        "lost_pct": (lost_ms(s2) - lost_ms(s1)) / ((t2 - t1) * 1000) * 100,
        "lost_after_ms": lost_ms(s3) - lost_ms(s2),
        "late_ms": s2["audio_late_ms"] - s1["audio_late_ms"],
        "underruns": s3["audio_underruns"] - s1["audio_underruns"],
        "freezes": len(freezes),
        "longest_freeze_ms": max(freezes, default=0.0) * 1000,
        "lat_before": median(samples.latencies(t0, t1)),
        "lat_during": median(samples.latencies(t1, t2)),
        "lat_during_max": max(samples.latencies(t1, t2), default=None),
        "lat_after": median(samples.latencies(t3 - 3.0, t3)),
        "recovered_s": samples.recovery(impairment_end or t2, median(samples.latencies(t0, t1))),
        "av_median": median(offsets),
        "av_worst": max(offsets, key=abs) if offsets else None,
        "flashes_paired": len(offsets),
        "packets": lab_during.get("seen", 0) - lab_before.get("seen", 0),
        "dropped": lab_during.get("dropped", 0) - lab_before.get("dropped", 0),
        "queue_dropped": lab_during.get("queue_dropped", 0) - lab_before.get("queue_dropped", 0),
        "kbps": (lab_during.get("bytes", 0) - lab_before.get("bytes", 0)) * 8 / (t2 - t1) / 1000,
        "reordered": lab_during.get("reordered", 0) - lab_before.get("reordered", 0),
        "extra_delay_end": s3["extra_delay_ms"],
        "concealed_ms": receive_figure(s3, "concealed_ms") - receive_figure(s1, "concealed_ms"),
        "concealed_pct": (receive_figure(s3, "concealed_ms") - receive_figure(s1, "concealed_ms"))
        / ((t2 - t1) * 1000) * 100,
        "fec": receive_figure(s3, "fec_recovered") - receive_figure(s1, "fec_recovered"),
        "nack_recovered": (receive_figure(s3, "retransmitted")
                           - receive_figure(s1, "retransmitted")),
        "video_skipped": (receive_figure(s3, "frames_skipped", "video")
                          - receive_figure(s1, "frames_skipped", "video")),
        "video_frames": s3["video_frames_in"] - s1["video_frames_in"],
        # the relay's delay-based estimate of the cloud's video (rtc.congestion.delay_based):
        # overuses over the clean first window (start-up included) and over the whole run
        "overuses_before": receive_figure(s1, "delay_overuses", "video"),
        "overuses": receive_figure(s3, "delay_overuses", "video"),
        "remb_kbps": receive_figure(s3, "remb_bitrate", "video") / 1000,
        "load": os.getloadavg()[0],
    }


async def sample_cloud(url: str, into: Samples) -> None:
    """The cloud's figures for its one session's video sender, twice a second."""
    async with httpx.AsyncClient(base_url=url, timeout=5) as http:
        while True:
            try:
                sessions = (await http.get("/api/v1/stats")).json().get("sessions", [])
            except (httpx.HTTPError, ValueError):
                sessions = []
            if sessions and sessions[-1].get("video_send"):
                into.rows.append((time.monotonic(), sessions[-1]["video_send"]))
            await asyncio.sleep(0.5)


def ceiling_figures(profile: Profile, receiver: Receiver, samples: Samples, cloud: Samples,
                    onset: float, t1: float, t2: float, t3: float) -> dict:
    """What a ceiling did: audio lost from its onset (the session's start for a ceiling
    from the start), how long until the video fit (the relay's latency within 100 ms of
    its latency on the clean path, for good), frames and the longest freeze from 5 s after
    the onset, the cloud's rate and pacer, and how long the rate took to climb back to 90 %
    of the ceiling once the path was clean (s after the window's end)."""
    if not cloud.rows:
        return {}
    clean = median(samples.latencies(t3 - 3.0, t3)) if profile.from_start else \
        median(samples.latencies(t1 - 6.0, t1))
    fit_s: float | None = None
    if clean is not None:
        for t, s in samples.rows:
            if onset <= t <= t2 and s.get("offset_ms") is not None:
                late = s["offset_ms"] + s["playout_delay_ms"] > clean + 100
                fit_s = None if late else (t - onset if fit_s is None else fit_s)
    settled = onset + 5.0
    arrivals = [t for t in receiver.video_arrivals if settled <= t <= t2]
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:], strict=False)]
    end = samples.at(t2)
    lost = lost_ms(end) - (0.0 if profile.from_start else lost_ms(samples.at(onset)))
    concealed = receive_figure(end, "concealed_ms") - (
        0.0 if profile.from_start else receive_figure(samples.at(onset), "concealed_ms"))
    window = [s for t, s in cloud.rows if settled <= t <= t2]
    late = [s for t, s in cloud.rows if t2 - 3.0 <= t <= t2]
    climb_s = None
    for t, s in cloud.rows:
        if t >= t2 and s.get("target_bitrate", 0) >= 0.9 * s.get("ceiling_bitrate", 1e12):
            climb_s = t - t2
            break
    last = late[-1] if late else cloud.rows[-1][1]
    return {
        "c_lost_pct": lost / max(1.0, (t2 - onset) * 1000) * 100,
        "c_concealed_pct": concealed / max(1.0, (t2 - onset) * 1000) * 100,
        "c_fit_s": fit_s,
        "c_fps": len(arrivals) / max(0.1, t2 - settled),
        "c_freeze_ms": max(gaps, default=t2 - settled) * 1000,
        "c_target_kbps": median([s["target_bitrate"] / 1000 for s in late
                                 if "target_bitrate" in s]),
        "c_estimate_kbps": median([s.get("estimate_bitrate", 0) / 1000 for s in late]),
        "c_send_kbps": median([(s.get("send_bitrate") or 0) / 1000 for s in late]),
        "c_pacer_ms": max((s.get("pacer_queue_delay_max_ms", 0) for s in window), default=None),
        "c_pacer_drops": last.get("pacer_dropped_packets"),
        "c_picture": f"{last.get('send_width')}x{last.get('send_height')}@"
                     f"{last.get('send_fps')}",
        "c_climb_s": climb_s,
        "c_overuses": last.get("delay_overuses"),
    }


def receive_figure(stats: dict, name: str, kind: str = "audio") -> float:
    """One figure of the relay's receive path for a track (0 when absent)."""
    return float((stats.get("receive") or {}).get(kind, {}).get(name) or 0)


def fmt(value: float | None, spec: str = ".0f") -> str:
    return "-" if value is None else format(value, spec)


def print_table(rows: list[dict], during: float) -> None:
    head = (f"{'profile':<21} {'audio lost':>15} {'conceal':>13} {'FEC':>4} "
            f"{'freezes':>13} {'relay latency ms':>22} {'A/V ms':>13} {'lab pkts':>16}")
    sub = (f"{'(cloud->relay)':<21} {'ms (%)':>15} {'ms (%)':>13} {'pkts':>4} "
           f"{'n (longest ms)':>13} {'before/during/after':>22} {'med (worst)':>13} "
           f"{'drop/reord/seen':>16}")
    print(f"\nimpaired for {during:g} s per profile; audio lost = relay audio_gap + late + "
          "reset during it; freezes = receiver gaps > 100 ms from the impairment's start")
    print(head)
    print(sub)
    for r in rows:
        if "error" in r:
            print(f"{r['profile']:<21} failed: {r['error']}")
            continue
        lost = f"{r['lost_ms']:.0f} ({r['lost_pct']:.1f}%)"
        freezes = f"{r['freezes']} ({r['longest_freeze_ms']:.0f})"
        latency = f"{fmt(r['lat_before'])}/{fmt(r['lat_during'])}/{fmt(r['lat_after'])}"
        av = f"{fmt(r['av_median'], '+.1f')} ({fmt(r['av_worst'], '+.0f')})"
        pkts = f"{r['dropped'] + r['queue_dropped']}/{r['reordered']}/{r['packets']}"
        conceal = f"{r['concealed_ms']:.0f} ({r['concealed_pct']:.1f}%)"
        print(f"{r['profile']:<21} {lost:>15} {conceal:>13} {r['fec']:>4.0f} "
              f"{freezes:>13} "
              f"{latency:>22} {av:>13} {pkts:>16}")
    print(f"\n{'profile':<21} {'lost after':>10} {'late ms':>8} {'underruns':>9} "
          f"{'lat max during':>14} {'extra delay at end':>18} {'flashes paired':>14} "
          f"{'NACK-recovered':>14} {'video frames skipped':>20} {'latency back (s)':>16} "
          f"{'video frames':>12} {'queue drops':>11} {'kb/s':>5} {'load':>5}")
    for r in rows:
        if "error" in r:
            continue
        print(f"{r['profile']:<21} {r['lost_after_ms']:>10.0f} {r['late_ms']:>8.0f} "
              f"{r['underruns']:>9} {fmt(r['lat_during_max']):>14} "
              f"{r['extra_delay_end']:>18.0f} {r['flashes_paired']:>14} "
              f"{r['nack_recovered']:>14.0f} {r['video_skipped']:>20.0f} "
              f"{fmt(r['recovered_s'], '.1f'):>16} {r['video_frames']:>12} "
              f"{r['queue_dropped']:>11} {r['kbps']:>5.0f} {r['load']:>5.1f}")
    ceilings = [r for r in rows if "c_lost_pct" in r]
    if not ceilings:
        return
    print(f"\n{'profile':<21} {'lost %':>6} {'concealed %':>11} {'fit s':>5} {'fps':>5} "
          f"{'freeze ms':>9} {'target/estimate/sent kb/s':>25} {'pacer max ms':>12} "
          f"{'pacer drops':>11} {'picture':>15} {'climb back s':>12}")
    for r in ceilings:
        rates = (f"{fmt(r['c_target_kbps'])}/{fmt(r['c_estimate_kbps'])}/"
                 f"{fmt(r['c_send_kbps'])}")
        print(f"{r['profile']:<21} {r['c_lost_pct']:>6.1f} {r['c_concealed_pct']:>11.1f} "
              f"{fmt(r['c_fit_s'], '.1f'):>5} {r['c_fps']:>5.1f} {r['c_freeze_ms']:>9.0f} "
              f"{rates:>25} {fmt(r['c_pacer_ms']):>12} {fmt(r['c_pacer_drops']):>11} "
              f"{r['c_picture']:>15} {fmt(r['c_climb_s'], '.1f'):>12}")


async def main(args: argparse.Namespace) -> int:
    names = (list(PROFILES) if not args.profiles else list(KEY_PROFILES)
             if args.profiles == "key" else list(CEILING_PROFILES)
             if args.profiles == "ceilings" else args.profiles.split(","))
    unknown = [n for n in names if n not in PROFILES]
    if unknown:
        print(f"unknown profiles {unknown}; known: {', '.join(PROFILES)}", file=sys.stderr)
        return 2
    try:
        lab = LossLab(backend=args.backend, upstream=Impairment())
        lab.__enter__()
    except LabUnavailable as exc:
        print(f"the loss lab cannot run here: {exc}", file=sys.stderr)
        return 2
    rows = []
    try:
        print(f"loss lab: {lab.backend} backend, cloud app at {lab.ws_url} "
              f"(namespace {lab.ns})", flush=True)
        for name in names:
            freeze = (f" (the cloud stopped for {args.freeze:g} s)" if PROFILES[name].freeze
                      else f" ({PROFILES[name].what})")
            print(f"profile {name}: {args.before:g} s unimpaired, {args.during:g} s impaired"
                  f"{freeze}, {args.after:g} s unimpaired ...", flush=True)
            try:
                rows.append(await run_profile(lab, name, args.before, args.during, args.after,
                                              args.freeze, args.pipeline))
            except Exception as exc:  # keep the other profiles' figures
                rows.append({"profile": name, "error": repr(exc)})
            print(f"  {rows[-1]}", flush=True)
    finally:
        lab.close()
    print_table(rows, args.during)
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=float, default=6.0, help="unimpaired seconds first")
    parser.add_argument("--during", type=float, default=20.0, help="impaired seconds")
    parser.add_argument("--after", type=float, default=10.0, help="unimpaired seconds after")
    # help is %-formatted by argparse: "1%" in a profile name needs escaping
    parser.add_argument("--profiles", default="",
                        help=f"'key' ({', '.join(KEY_PROFILES)}), 'ceilings' "
                        f"({', '.join(CEILING_PROFILES)}) or a comma-separated "
                        f"subset of: {', '.join(PROFILES)}".replace("%", "%%"))
    parser.add_argument("--backend", choices=("netem", "nfqueue"), default=None,
                        help="force an impairment backend (default: netem if the kernel has it)")
    parser.add_argument("--pipeline", choices=tuple(PIPELINES), default="av-sync",
                        help="av-sync (clicks and flashes: A/V), a continuous tone, or a "
                        "tone with 720p video (hd15, hd30; the ceiling profiles' own)")
    parser.add_argument("--freeze", type=float, default=CLOUD_FREEZE_S,
                        help="seconds the 3s-freeze profile stops the cloud for")
    sys.exit(asyncio.run(main(parse_args(parser, QUICK))))
