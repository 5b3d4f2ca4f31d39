"""End-to-end check of a cloud app, whatever hosts it (run by scripts/e2e.sh).

Starts the real relay in this process against the cloud app that ``SCOPE_CLOUD_APP_ID`` /
``SCOPE_CLOUD_WS_URL`` name (with ``SCOPE_CLOUD_BASE_URL`` and ``SCOPE_CLOUD_API_KEY``, as
the relay reads them), connects an aiortc receiver to the relay the way the page does
(``POST /api/v1/webrtc/offer`` with ``initialParameters.pipeline_ids``) and checks:

- flags: ``GET /api/v1/pipelines`` says test-tone makes audio only and av-sync audio and
  video, and each answer has exactly the tracks those flags imply (and no others flow);
- a tone: test-tone at ``--frequency`` arrives at that frequency (FFT peak within 1 %);
- lip sync: av-sync's flashes and clicks line up within ``--max-lip-sync-ms`` at the
  receiver, both tracks mapped to the relay's clock through its RTCP sender reports.

Prints the figures; exits 0 when every check passes, 1 when one fails, 2 when no target
is configured. The receiver <-> relay hop stays on 127.0.0.1 (both are here); the relay's
hop to the cloud gathers loopback candidates only for a loopback target (or with
``SCOPE_RELAY_ICE_LOOPBACK=1``), so a hosted target gets real ones. Only the package is
imported, never the tests, so a workflow can run this on its own.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable
from typing import Any

import httpx
import numpy as np
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from scope_relay.local.cloud_link.target import resolve_cloud_target
from scope_relay.local.server import RelayConfig, create_relay_app
from scope_relay.media.audio import frame_to_s16
from scope_relay.rtc.ice import loopback_candidates, rtc_configuration
from scope_relay.rtc.sender_reports import SenderReportTap
from scope_relay.util.serve import serve

RATE = 48000
#: what each checked pipeline must declare: (produces_audio, produces_video)
EXPECTED_FLAGS = {"test-tone": (True, False), "av-sync": (True, True)}


class Receiver:
    """Offers like the page (recvonly audio and video, the ``parameters`` channel) and keeps
    what arrives: int16 ``(2, n)`` audio blocks with their pts, video (pts, brightness)."""

    def __init__(self) -> None:
        self.pc = RTCPeerConnection(rtc_configuration())
        self.taps = {kind: SenderReportTap(self.pc.addTransceiver(kind, direction="recvonly").receiver,
                                           RATE if kind == "audio" else 90000)
                     for kind in ("video", "audio")}
        self.pc.createDataChannel("parameters", ordered=True)
        self.audio: list[np.ndarray] = []
        self.audio_pts: list[int] = []
        self.video: list[tuple[int, float]] = []
        self.answer_sdp = ""
        self._arrived = asyncio.Condition()
        self._tasks: list[asyncio.Task] = []
        self.pc.on("track", lambda track: self._tasks.append(asyncio.ensure_future(self._read(track))))

    async def _read(self, track: MediaStreamTrack) -> None:
        try:
            while True:
                frame: Any = await track.recv()
                if track.kind == "audio":
                    self.audio.append(frame_to_s16(frame))
                    self.audio_pts.append(frame.pts)
                else:
                    self.video.append((frame.pts, float(frame.to_ndarray(format="gray").mean())))
                async with self._arrived:
                    self._arrived.notify_all()
        except MediaStreamError:
            pass

    async def connect(self, http: httpx.AsyncClient, initial_parameters: dict[str, Any]) -> None:
        with loopback_candidates():  # the relay runs here: this hop stays on 127.0.0.1
            await self.pc.setLocalDescription(await self.pc.createOffer())
        reply = await http.post("/api/v1/webrtc/offer", json={
            "sdp": self.pc.localDescription.sdp, "type": "offer",
            "initialParameters": initial_parameters})
        if reply.status_code != 200:
            raise CheckFailed(f"offer refused: {reply.status_code} {reply.text}")
        self.answer_sdp = reply.json()["sdp"]
        await self.pc.setRemoteDescription(RTCSessionDescription(self.answer_sdp, "answer"))

    async def wait(self, enough: Callable[[], bool], timeout: float, what: str) -> None:
        async def arrived() -> None:
            async with self._arrived:
                await self._arrived.wait_for(enough)
        try:
            await asyncio.wait_for(arrived(), timeout)
        except TimeoutError:
            raise CheckFailed(f"timed out waiting for {what} ({len(self.audio)} audio, "
                              f"{len(self.video)} video frames)") from None

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await self.pc.close()


class CheckFailed(Exception):
    pass


def media_sections(sdp: str) -> dict[str, str]:
    """kind -> direction of each audio/video m-line ('rejected' for port 0)."""
    out: dict[str, str] = {}
    kind = None
    for line in sdp.splitlines():
        if line.startswith("m="):
            kind = line[2:].split()[0]
            out[kind] = "rejected" if line.split()[1] == "0" else "sendrecv"
        elif kind and line.strip() in ("a=sendrecv", "a=sendonly", "a=recvonly", "a=inactive"):
            out[kind] = line.strip()[2:]
    return {k: v for k, v in out.items() if k in ("audio", "video")}


def dominant_frequency(x: np.ndarray) -> float:
    """Spectrum peak with parabolic interpolation (good to well under 1 %)."""
    spectrum = np.abs(np.fft.rfft(x.astype(np.float64) * np.hanning(len(x))))
    k = float(np.argmax(spectrum[1:]) + 1)
    i = int(k)
    if 1 <= i < len(spectrum) - 1:
        a, b, c = np.log(spectrum[i - 1:i + 2] + 1e-12)
        k += 0.5 * (a - c) / (a - 2 * b + c)
    return k * RATE / len(x)


def beep_frequencies(left: np.ndarray, threshold: int = 2000, shortest: float = 0.2) -> list[float]:
    """The frequency of each whole beep (a run of loud 20 ms blocks of at least
    ``shortest`` s), 10 ms trimmed at each end so the onsets don't blur it."""
    blocks = left[: len(left) // 960 * 960].reshape(-1, 960)
    loud = np.append(np.abs(blocks).max(axis=1) > threshold, False)
    beeps, start = [], None
    for i, on in enumerate(loud):
        if on and start is None:
            start = i
        elif not on and start is not None:
            beeps.append(blocks[start:i].reshape(-1))
            start = None
    trim = RATE // 100
    return [dominant_frequency(b[trim:-trim]) for b in beeps if len(b) >= shortest * RATE]


def expected_sections(produces_audio: bool, produces_video: bool) -> dict[str, str]:
    return {"video": "sendonly" if produces_video else "inactive",
            "audio": "sendonly" if produces_audio else "inactive"}


async def check_flags(http: httpx.AsyncClient) -> dict[str, tuple[bool, bool]]:
    reply = await http.get("/api/v1/pipelines")
    if reply.status_code != 200:
        raise CheckFailed(f"GET /api/v1/pipelines: {reply.status_code} {reply.text}")
    listed = {p["id"]: p for p in reply.json()["pipelines"]}
    flags = {}
    for pid, expected in EXPECTED_FLAGS.items():
        if pid not in listed:
            raise CheckFailed(f"pipeline {pid} not listed (have {sorted(listed)})")
        flags[pid] = (bool(listed[pid]["produces_audio"]), bool(listed[pid]["produces_video"]))
        print(f"flags: {pid}: produces_audio={flags[pid][0]} produces_video={flags[pid][1]}")
        if flags[pid] != expected:
            raise CheckFailed(f"{pid} flags {flags[pid]}, expected (audio, video) = {expected}")
    return flags


def check_tracks(name: str, receiver: Receiver, flags: tuple[bool, bool]) -> None:
    got, want = media_sections(receiver.answer_sdp), expected_sections(*flags)
    print(f"tracks: {name}: answer {got}, flags imply {want}")
    if got != want:
        raise CheckFailed(f"{name}: answer tracks {got}, expected {want}")
    if not flags[1] and receiver.video:
        raise CheckFailed(f"{name}: {len(receiver.video)} video frames arrived on an audio-only chain")


async def check_tone(http: httpx.AsyncClient, flags: tuple[bool, bool], frequency: float,
                     timeout: float) -> None:
    receiver = Receiver()
    try:
        await receiver.connect(http, {"pipeline_ids": ["test-tone"], "frequency": frequency,
                                      "interval": 0.5, "duration": 0.3})
        await receiver.wait(lambda: len(receiver.audio) >= 60, timeout, "test-tone audio")
        check_tracks("test-tone", receiver, flags)
        beeps = beep_frequencies(np.concatenate(receiver.audio, axis=1)[0])
        shown = ", ".join(f"{b:.1f}" for b in beeps) or "none"
        print(f"tone: asked {frequency:g} Hz, beeps at {shown} Hz")
        if not beeps:
            raise CheckFailed("tone: no beep arrived")
        error = max(abs(b - frequency) / frequency for b in beeps)
        print(f"tone: worst error {100 * error:.2f} % (limit 1 %)")
        if error > 0.01:
            raise CheckFailed(f"tone: a beep is {100 * error:.2f} % off {frequency:g} Hz")
    finally:
        await receiver.close()


async def check_lip_sync(http: httpx.AsyncClient, flags: tuple[bool, bool], limit_ms: float,
                         timeout: float) -> None:
    receiver = Receiver()
    try:
        await receiver.connect(http, {"pipeline_ids": ["av-sync"]})
        await receiver.wait(lambda: len(receiver.audio) >= 200 and len(receiver.video) >= 72,
                            timeout, "av-sync audio and video")
        check_tracks("av-sync", receiver, flags)
        video_tap, audio_tap = receiver.taps["video"], receiver.taps["audio"]
        if not (video_tap.synced and audio_tap.synced):
            raise CheckFailed("lip sync: no RTCP sender report from the relay on both tracks")
        seen = list(receiver.video)
        flashes = [video_tap.best_time(pts) for (pts, b), (_, before) in zip(seen[1:], seen[:-1], strict=True)
                   if b > 128 >= before]
        audio = np.abs(np.concatenate(receiver.audio, axis=1)[0].astype(np.int32))
        loud = np.flatnonzero(audio > 8000)
        onsets = loud[np.insert(np.diff(loud) > RATE // 10, 0, True)] if loud.size else loud
        first = receiver.audio_pts[0]
        clicks = [audio_tap.best_time(first + int(o)) for o in onsets]
        start, end = audio_tap.best_time(first), audio_tap.best_time(first + audio.size)
        assert start is not None and end is not None
        covered = [f for f in flashes if f is not None and start + 0.05 < f < end - 0.05]
        print(f"lip sync: {len(flashes)} flashes, {len(clicks)} clicks, {len(covered)} flashes with audio")
        if len(covered) < 2 or not clicks:
            raise CheckFailed("lip sync: too few flashes and clicks to compare")
        offsets = [min((c - f for c in clicks if c is not None), key=abs) * 1000 for f in covered]
        worst = max(abs(o) for o in offsets)
        print(f"lip sync: click minus flash {', '.join(f'{o:+.1f}' for o in offsets)} ms; "
              f"worst {worst:.1f} ms (limit {limit_ms:g} ms)")
        if worst > limit_ms:
            raise CheckFailed(f"lip sync: off by {worst:.1f} ms")
    finally:
        await receiver.close()


async def run(args: argparse.Namespace) -> int:
    try:
        target = resolve_cloud_target()
    except ValueError as exc:
        print(f"e2e: {exc}", file=sys.stderr)
        return 2
    if target is None:
        print("e2e: set SCOPE_CLOUD_APP_ID (or SCOPE_CLOUD_WS_URL) to the cloud app to check",
              file=sys.stderr)
        return 2
    print(f"e2e: target {target.ws_url} ({'with' if target.api_key else 'without'} an API key)")
    started = time.monotonic()
    config = RelayConfig(target, loopback_ice=True, ready_timeout=args.timeout)
    async with serve(create_relay_app(config), shutdown_timeout=1.0) as relay, \
            httpx.AsyncClient(base_url=relay.url, timeout=args.timeout) as http:
        try:
            flags = await check_flags(http)
            print(f"e2e: cloud app ready after {time.monotonic() - started:.1f} s")
            # one session at a time: a GPU cloud app keeps one chain loaded
            await check_tone(http, flags["test-tone"], args.frequency, args.timeout)
            await check_lip_sync(http, flags["av-sync"], args.max_lip_sync_ms, args.timeout)
        except CheckFailed as exc:
            print(f"e2e: FAIL: {exc}")
            return 1
    print(f"e2e: PASS in {time.monotonic() - started:.1f} s")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frequency", type=float, default=880.0, help="test tone in Hz (default 880)")
    parser.add_argument("--max-lip-sync-ms", type=float, default=40.0,
                        help="largest flash/click offset accepted (default 40)")
    parser.add_argument("--timeout", type=float, default=600.0,
                        help="seconds to wait for the cloud app (cold starts) and for media (default 600)")
    return asyncio.run(run(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
