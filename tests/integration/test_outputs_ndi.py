"""NDI output (local/outputs/ndi.py), received by the NDI library's own finder and receiver
over loopback: every frame at the session's fps, audio at 48 kHz, A/V by timecode within
one frame. Skipped where the ``ndi`` extra is not installed."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
import pytest

from scope_relay.local.server import RELAY_KEY

from helpers.peers import connected
from helpers.servers import cloud_server, relay_server
from helpers.waiting import wait_until

NDIlib: Any = pytest.importorskip("NDIlib", reason="the 'ndi' extra is not installed")

FPS = 24  # av-sync
SECONDS = 5.0
TIMECODE_RATE = 10_000_000


@dataclass
class Received:
    frame_rate: tuple[int, int] = (0, 0)
    size: tuple[int, int] = (0, 0)
    video: list[tuple[int, float]] = field(default_factory=list)  # (timecode, brightness)
    audio: list[tuple[int, np.ndarray]] = field(default_factory=list)  # (timecode, left)
    audio_rates: set[int] = field(default_factory=set)


def find_source(finder: Any, name: str) -> Any:
    """The NDI finder's entry for our source (named ``HOST (name)``)."""
    deadline, source = time.monotonic() + 20, None
    while source is None and time.monotonic() < deadline:
        NDIlib.find_wait_for_sources(finder, 500)
        source = next((s for s in NDIlib.find_get_current_sources(finder)
                       if s.ndi_name.endswith(f"({name})")), None)
    assert source is not None, "the NDI finder never saw the source"
    return source


def receive(name: str, seconds: float, from_a_picture: bool = True) -> Received:
    """Find the source ``name`` over loopback and receive it for ``seconds`` from its first
    picture (``from_a_picture=False``: from the start, for an audio-only source, whose
    picture never comes). Blocking: run it in a thread."""
    ndi = NDIlib
    assert ndi.initialize()
    create = ndi.FindCreate()
    create.extra_ips = "127.0.0.1"  # no mDNS needed
    finder = ndi.find_create_v2(create)
    got = Received()
    try:
        source = find_source(finder, name)
        options = ndi.RecvCreateV3()
        options.color_format = ndi.RECV_COLOR_FORMAT_BGRX_BGRA
        options.source_to_connect_to = source
        receiver = ndi.recv_create_v3(options)
        try:
            end = None if from_a_picture else time.monotonic() + seconds
            while end is None or time.monotonic() < end:
                kind, video, audio, _ = ndi.recv_capture_v3(receiver, 500)
                if kind == ndi.FRAME_TYPE_VIDEO:
                    end = end or time.monotonic() + seconds
                    got.frame_rate = (video.frame_rate_N, video.frame_rate_D)
                    got.size = (video.xres, video.yres)
                    got.video.append((video.timecode, float(video.data[..., :3].mean())))
                    ndi.recv_free_video_v2(receiver, video)
                elif kind == ndi.FRAME_TYPE_AUDIO:
                    got.audio_rates.add(audio.sample_rate)
                    got.audio.append((audio.timecode, np.array(audio.data[0])))
                    ndi.recv_free_audio_v3(receiver, audio)
        finally:
            ndi.recv_destroy(receiver)
    finally:
        ndi.find_destroy(finder)
    return got


def flash_timecodes(got: Received) -> list[int]:
    out, dark = [], True
    for timecode, level in got.video:
        if level > 128 and dark:
            out.append(timecode)
        dark = level <= 128
    return out


def click_timecodes(got: Received) -> list[int]:
    out, last = [], -TIMECODE_RATE
    for timecode, left in got.audio:
        loud = np.flatnonzero(np.abs(left) > 0.1)
        if loud.size:
            onset = timecode + loud[0] * TIMECODE_RATE // 48000
            if onset - last > TIMECODE_RATE // 3:
                out.append(onset)
            last = timecode + loud[-1] * TIMECODE_RATE // 48000
    return out


async def test_ndi_receiver_finds_the_source_and_gets_every_frame_in_sync():
    name = f"scope-relay test {time.monotonic_ns()}"
    async with cloud_server() as cloud, relay_server(cloud) as relay, \
            connected(relay.url, {"pipeline_ids": ["av-sync"]}) as owner:
        await owner.wait_video_frames(12, timeout=30)
        async with httpx.AsyncClient(base_url=relay.url, timeout=30) as http:
            started = await http.post("/api/v1/outputs", json={
                "sessionId": owner.session_id, "kind": "ndi", "name": name})
            assert started.status_code == 200, started.text
            output_id = started.json()["outputId"]
            got = await asyncio.wait_for(asyncio.to_thread(receive, name, SECONDS), 60)

            assert got.size == (320, 240)
            assert got.frame_rate[0] / got.frame_rate[1] == pytest.approx(FPS, abs=0.1)
            assert got.audio_rates == {48000}
            spacing = np.diff([t for t, _ in got.video]) / TIMECODE_RATE
            print(f"NDI: {len(got.video)} pictures in {SECONDS} s, timecode spacing median "
                  f"{np.median(spacing) * 1000:.1f} ms, max {spacing.max() * 1000:.1f} ms")
            assert len(got.video) >= FPS * SECONDS * 0.9
            assert np.median(spacing) == pytest.approx(1 / FPS, abs=0.002)
            clicks = click_timecodes(got)
            offsets = [min(clicks, key=lambda c: abs(c - f)) - f for f in flash_timecodes(got)
                       if clicks]
            print("NDI A/V offsets by timecode (ms):",
                  [round(o / TIMECODE_RATE * 1000, 1) for o in offsets])
            assert len(offsets) >= SECONDS - 2
            assert max(abs(o) for o in offsets) < TIMECODE_RATE / FPS  # within one frame

            (listed,) = (await http.get("/api/v1/stats")).json()["sessions"]
            ndi = listed["outputs"]["ndi"]
            assert ndi["outputs"] == 1 and ndi["frames_sent"] > FPS * SECONDS, ndi
            print("NDI output figures:", ndi)
            assert (await http.get(f"/api/v1/outputs/{output_id}")).json()["name"] == name
            stopped = await http.delete(f"/api/v1/outputs/{output_id}")
            assert stopped.status_code == 200 and stopped.json()["closed"]
            assert (await http.delete(f"/api/v1/outputs/{output_id}")).status_code == 404
            (listed,) = (await http.get("/api/v1/stats")).json()["sessions"]
            assert listed["outputs"]["ndi"]["outputs"] == 0
        assert owner.pc.connectionState == "connected"


async def test_output_requests_are_checked(stack):
    _, relay = stack
    async with connected(relay.url, {"pipeline_ids": ["test-tone"]}, video=False) as owner:
        # playing first: ``connected`` returns once the answer is set, before ICE and DTLS
        # are done, and the requests below take milliseconds
        await owner.wait_audio_frames(25, timeout=30)
        async with httpx.AsyncClient(base_url=relay.url, timeout=30) as http:
            kind = await http.post("/api/v1/outputs", json={"sessionId": owner.session_id,
                                                             "kind": "spout"})
            assert kind.status_code == 400 and kind.json()["code"] == "INVALID_MESSAGE"
            unknown = await http.post("/api/v1/outputs", json={"sessionId": "nope", "kind": "ndi"})
            assert unknown.status_code == 404 and unknown.json()["code"] == "UNKNOWN_SESSION"
            named = await http.post("/api/v1/outputs", json={
                "sessionId": owner.session_id, "kind": "ndi", "name": ""})
            assert named.status_code == 400
        (session,) = relay.app[RELAY_KEY].sessions.values()
        assert session.pc.connectionState == "connected"
        await owner.wait_audio_frames(25, timeout=30)  # and it plays on


def test_ndi_flag_parses_with_and_without_a_name():
    from scope_relay.cli.main import build_parser

    parser = build_parser()
    assert parser.parse_args(["local"]).ndi is None
    assert parser.parse_args(["local", "--ndi"]).ndi == ""
    assert parser.parse_args(["local", "--ndi", "Stage left"]).ndi == "Stage left"


async def test_ndi_flag_publishes_the_newest_session():
    name = f"scope-relay auto {time.monotonic_ns()}"
    async with cloud_server() as cloud, relay_server(cloud, ndi_name=name) as relay:
        outputs = relay.app[RELAY_KEY].outputs
        async with connected(relay.url, {"pipeline_ids": ["test-tone"]}, video=False) as first:
            await wait_until(lambda: [sid for sid, _ in outputs.ndi.values()] == [first.session_id],
                             timeout=20)
            async with connected(relay.url, {"pipeline_ids": ["test-tone"]}, video=False) as second:
                await wait_until(lambda: [sid for sid, _ in outputs.ndi.values()]
                                 == [second.session_id], timeout=20)
                ((_, output),) = outputs.ndi.values()
                assert output.name == name
                got = await asyncio.wait_for(asyncio.to_thread(receive, name, 2, False), 60)
                assert got.audio_rates == {48000} and len(got.audio) > 10
