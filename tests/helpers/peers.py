"""A Python aiortc peer standing in for the browser page, with what only this suite needs:
sender-report taps, received pts and arrival times, a microphone, SDP inspection. What the
public kit offers (cameras, ``dominant_frequency``, ``rms``...) comes from
:mod:`scope_relay.testing`; nothing here duplicates it."""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import av
import httpx
import numpy as np
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from scope_relay.media.audio import frame_to_s16
from scope_relay.rtc.ice import rtc_configuration
from scope_relay.rtc.sender_reports import SenderReportTap
from scope_relay.testing import dominant_frequency
from scope_relay.testing.camera import PacedTrack


class ToneMicrophone(PacedTrack):
    """A fake microphone: a sine of ``frequency`` Hz, mono 48 kHz s16, in 20 ms frames
    paced in real time, its phase continuous from frame to frame."""

    kind = "audio"

    def __init__(self, frequency: float = 440.0, amplitude: float = 0.3):
        super().__init__()
        self.frequency = frequency
        self.amplitude = amplitude
        self._sample = 0

    async def recv(self) -> av.AudioFrame:
        await self.pace(self._sample / 48000)
        t = (self._sample + np.arange(960)) / 48000
        tone = self.amplitude * np.sin(2 * np.pi * self.frequency * t)
        frame = av.AudioFrame.from_ndarray(np.round(tone * 32767).astype(np.int16)[None],
                                           format="s16", layout="mono")
        frame.sample_rate = 48000
        frame.pts = self._sample
        frame.time_base = fractions.Fraction(1, 48000)
        self._sample += 960
        return frame


@dataclass
class Received:
    audio: list[np.ndarray] = field(default_factory=list)  # int16 (2, n) per frame
    audio_pts: list[int] = field(default_factory=list)
    audio_rates: set[int] = field(default_factory=set)
    audio_layouts: set[str] = field(default_factory=set)
    video: list[tuple[float, np.ndarray]] = field(default_factory=list)  # (arrival, mean rgb)
    video_brightness: list[tuple[int, float]] = field(default_factory=list)  # (pts, mean)

    def audio_array(self) -> np.ndarray:
        return np.concatenate(self.audio, axis=1) if self.audio else np.zeros((2, 0), np.int16)


class BrowserPeer:
    """Offers like the page does: recvonly (or sendrecv with a camera) transceivers."""

    def __init__(self, *, video: bool = True, audio: bool = True,
                 camera: MediaStreamTrack | None = None,
                 microphone: MediaStreamTrack | None = None):
        self.pc = RTCPeerConnection(rtc_configuration())
        self.received = Received()
        self.audio_frames = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._wanted_audio = 0
        self._wanted_video = 0
        self._audio_goal = asyncio.Event()
        self._video_goal = asyncio.Event()
        self.taps: dict[str, SenderReportTap] = {}
        if video:
            if camera is not None:
                t = self.pc.addTransceiver(camera, direction="sendrecv")
            else:
                t = self.pc.addTransceiver("video", direction="recvonly")
            self.taps["video"] = SenderReportTap(t.receiver, 90000)
        if audio:
            t = (self.pc.addTransceiver(microphone, direction="sendrecv") if microphone
                 else self.pc.addTransceiver("audio", direction="recvonly"))
            self.taps["audio"] = SenderReportTap(t.receiver, 48000)
        self.channel = self.pc.createDataChannel("parameters", ordered=True)
        self.channel_open = asyncio.Event()
        self.channel.on("open", self.channel_open.set)
        self.pc.on("track", self._on_track)
        self.session_id: str | None = None
        self.answer_sdp: str | None = None
        self.offer_sdp: str | None = None

    def _on_track(self, track) -> None:
        self._tasks.append(asyncio.ensure_future(self._consume(track)))

    async def _consume(self, track) -> None:
        try:
            while True:
                frame = await track.recv()
                if track.kind == "audio":
                    self.received.audio_rates.add(frame.sample_rate)
                    self.received.audio_layouts.add(frame.layout.name)
                    self.received.audio.append(frame_to_s16(frame))
                    self.received.audio_pts.append(frame.pts)
                    if len(self.received.audio) >= self._wanted_audio:
                        self._audio_goal.set()
                else:
                    rgb = frame.to_ndarray(format="rgb24")
                    mean = rgb.reshape(-1, 3).mean(axis=0)
                    self.received.video.append((time.monotonic(), mean))
                    self.received.video_brightness.append((frame.pts, float(mean.mean())))
                    if len(self.received.video) >= self._wanted_video:
                        self._video_goal.set()
        except MediaStreamError:
            pass

    async def wait_audio_frames(self, n: int, timeout: float = 20.0) -> None:
        self._wanted_audio = len(self.received.audio) + n
        self._audio_goal.clear()
        if len(self.received.audio) < self._wanted_audio:
            await asyncio.wait_for(self._audio_goal.wait(), timeout)

    async def wait_video_frames(self, n: int, timeout: float = 20.0) -> None:
        self._wanted_video = len(self.received.video) + n
        self._video_goal.clear()
        if len(self.received.video) < self._wanted_video:
            await asyncio.wait_for(self._video_goal.wait(), timeout)

    async def connect_relay(self, relay_url: str,
                            initial_parameters: dict[str, Any]) -> httpx.Response:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        self.offer_sdp = self.pc.localDescription.sdp
        async with httpx.AsyncClient(base_url=relay_url, timeout=60) as http:
            response = await http.post("/api/v1/webrtc/offer", json={
                "sdp": self.offer_sdp, "type": "offer", "initialParameters": initial_parameters})
        if response.status_code == 200:
            data = response.json()
            self.session_id = data["sessionId"]
            self.answer_sdp = data["sdp"]
            await self.pc.setRemoteDescription(RTCSessionDescription(data["sdp"], "answer"))
        return response

    async def send_parameters(self, updates: dict[str, Any]) -> None:
        await asyncio.wait_for(self.channel_open.wait(), 10)
        self.channel.send(json.dumps(updates))

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        await self.pc.close()


@contextlib.asynccontextmanager
async def connected(relay_url: str, initial_parameters: dict[str, Any],
                    **peer_options: Any) -> AsyncIterator[BrowserPeer]:
    """A :class:`BrowserPeer` whose offer the relay answered (asserted), closed afterwards."""
    peer = BrowserPeer(**peer_options)
    try:
        response = await peer.connect_relay(relay_url, initial_parameters)
        assert response.status_code == 200, response.text
        yield peer
    finally:
        await peer.close()


def media_sections(sdp: str) -> dict[str, str]:
    """kind -> direction for each m-line of an SDP ('application' for data)."""
    out: dict[str, str] = {}
    kind = None
    for line in sdp.splitlines():
        if line.startswith("m="):
            kind = line[2:].split()[0]
            out.setdefault(kind, "sendrecv" if kind != "application" else "data")
            if line.split()[1] == "0":
                out[kind] = "rejected"
        elif kind and line.strip() in ("a=sendrecv", "a=sendonly", "a=recvonly", "a=inactive"):
            out[kind] = line.strip()[2:]
    return out


def tone_purity(x: np.ndarray, rate: int, frequencies: list[float],
                width: float = 25.0) -> float:
    """Power within ``width`` Hz of ``frequencies`` against all the rest, in dB (DC and
    below 20 Hz left out): how pure a tone (or a pair of them) came through."""
    x = x.astype(np.float64) * np.hanning(len(x))
    power = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / rate)
    wanted = np.zeros(len(freqs), bool)
    for f in frequencies:
        wanted |= np.abs(freqs - f) < width
    rest = ~wanted & (freqs >= 20)
    return float(10 * np.log10(power[wanted].sum() / max(power[rest].sum(), 1e-30)))


def beep_segments(mono: np.ndarray, threshold: float = 2000) -> list[np.ndarray]:
    """Contiguous stretches of 20 ms blocks whose peak exceeds ``threshold``."""
    blocks = mono[: len(mono) // 960 * 960].reshape(-1, 960)
    loud = np.abs(blocks).max(axis=1) > threshold
    segments, current = [], []
    for i, on in enumerate(loud):
        if on:
            current.append(blocks[i])
        elif current:
            segments.append(np.concatenate(current))
            current = []
    if current:
        segments.append(np.concatenate(current))
    return segments


def beep_frequencies(blocks: list[np.ndarray], sample_rate: int = 48000) -> list[float]:
    """The dominant frequency of every beep of at least 100 ms in received ``(2, n)`` blocks
    (left channel), 10 ms trimmed at each end so the onsets don't blur it."""
    if not blocks:
        return []
    left = np.concatenate(blocks, axis=1)[0]
    trim = sample_rate // 100
    return [dominant_frequency(b[trim:-trim], sample_rate)
            for b in beep_segments(left) if len(b) >= sample_rate // 10]


def av_offsets(peer: BrowserPeer, since_video: int, since_audio: int) -> list[float]:
    """Click minus flash (seconds) for each flash from video frame ``since_video`` on that
    the audio from frame ``since_audio`` on covers; both on the relay's clock through its
    sender reports, as a browser lip-syncs them."""
    video_tap, audio_tap = peer.taps["video"], peer.taps["audio"]
    seen = peer.received.video_brightness[since_video:]
    flashes = [video_tap.best_time(pts) for (pts, b), (_, prev) in zip(seen[1:], seen[:-1],
                                                                        strict=True)
               if b > 128 >= prev]
    blocks = peer.received.audio[since_audio:]
    starts = peer.received.audio_pts[since_audio:since_audio + len(blocks)]
    clicks: list[float] = []
    quiet = True
    for pts, block in zip(starts, blocks, strict=False):
        loud = np.flatnonzero(np.abs(block[0].astype(np.int32)) > 8000)
        if loud.size and quiet:
            click = audio_tap.best_time(pts + int(loud[0]))
            if click is not None:  # like a flash, placed only once a sender report came
                clicks.append(click)
        quiet = not loud.size
    covered = [f for f in flashes if f is not None and clicks
               and clicks[0] - 0.5 < f < clicks[-1] + 0.5]
    return [min((c - f for c in clicks), key=abs) for f in covered]
