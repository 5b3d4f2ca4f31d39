"""Recording at the relay through its API: the file holds what the browser was sent, both
tracks on one timeline (the av-sync flashes and clicks line up in the file as they did
live), as long as the wall time it ran, and it keeps going across a cloud-hop reconnect
with timestamps that only move forward."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import httpx
import numpy as np
import pytest

from scope_relay.cloud.app import STATE_KEY
from scope_relay.local.recording.catalogue import Recordings
from scope_relay.local.server import RELAY_KEY

from helpers.peers import BrowserPeer, connected
from helpers.servers import Served, cloud_server, relay_server
from helpers.waiting import wait_until

AV_SYNC = {"pipeline_ids": ["av-sync"]}


@dataclass
class Decoded:
    """A recorded file, decoded the way an editor would read it."""

    streams: dict[str, float]           # kind -> duration (s)
    video_times: np.ndarray            # presentation time of every frame (s)
    brightness: np.ndarray             # mean luma of every frame
    audio_times: np.ndarray            # pts of every decoded audio frame (s)
    audio: np.ndarray                  # mono float PCM from time 0
    codecs: dict[str, str]

    def flashes(self) -> np.ndarray:
        rising = (self.brightness[1:] > 128) & (self.brightness[:-1] <= 128)
        return self.video_times[1:][rising]

    def clicks(self) -> np.ndarray:
        loud = np.flatnonzero(np.abs(self.audio) > 0.25)
        return loud[np.insert(np.diff(loud) > 4800, 0, True)] / 48000


def decode(path: Path) -> Decoded:
    with av.open(str(path)) as container:
        streams: dict[str, float] = {}
        codecs: dict[str, str] = {}
        for s in container.streams:
            assert s.duration is not None and s.time_base is not None  # written by the muxer
            streams[s.type] = float(s.duration * s.time_base)
            codecs[s.type] = s.codec_context.name
        times, brightness = [], []
        for frame in container.decode(video=0):
            times.append(float(frame.time))
            brightness.append(float(frame.to_ndarray(format="gray").mean()))
    with av.open(str(path)) as container:
        audio_times, pcm = [], []
        for audio_frame in container.decode(audio=0):
            assert audio_frame.time is not None  # decoded with a pts
            audio_times.append(float(audio_frame.time))
            pcm.append(audio_frame.to_ndarray()[0])
    assert audio_times and audio_times[0] == 0.0  # AAC priming is cut by the edit list
    return Decoded(streams, np.array(times), np.array(brightness), np.array(audio_times),
                   np.concatenate(pcm), codecs)


def av_offsets(d: Decoded) -> tuple[list[float], int]:
    """Click minus flash (seconds) for every flash the audio covers, and how many of those
    had no click near them: audio the relay dropped as late (``audio_late_ms``) is silence
    for the browser, and so in the file."""
    clicks = d.clicks()
    covered = [f for f in d.flashes() if 0.05 < f < len(d.audio) / 48000 - 0.05]
    nearest = [float(min(clicks - f, key=abs)) for f in covered]
    return [o for o in nearest if abs(o) < 0.2], sum(abs(o) >= 0.2 for o in nearest)


@contextlib.asynccontextmanager
async def playing_av_sync(relay: Served) -> AsyncIterator[tuple[BrowserPeer, httpx.AsyncClient]]:
    """A session of ``av-sync`` that has played 1 s of audio and 12 frames, and an HTTP
    client for the relay's recordings API."""
    async with connected(relay.url, AV_SYNC) as peer, httpx.AsyncClient(
            base_url=relay.url, timeout=30) as http:
        await asyncio.gather(peer.wait_audio_frames(50, timeout=30),
                             peer.wait_video_frames(12, timeout=30))
        assert peer.session_id is not None
        yield peer, http


async def record(http: httpx.AsyncClient, session_id: str) -> dict[str, Any]:
    response = await http.post("/api/v1/recordings", json={"sessionId": session_id})
    assert response.status_code == 200, response.text
    return response.json()


async def stop_and_download(http: httpx.AsyncClient, recording_id: str,
                            into: Path) -> tuple[dict[str, Any], Path]:
    response = await http.delete(f"/api/v1/recordings/{recording_id}")
    assert response.status_code == 200, response.text
    result = response.json()
    download = await http.get(result["url"])
    assert download.status_code == 200, download.text
    assert download.headers["Content-Type"] == "video/mp4"
    assert download.headers["Content-Disposition"].startswith('attachment; filename="scope-relay-av-sync-')
    # never sniffed as a page or script, never embedded by another site
    assert download.headers["X-Content-Type-Options"] == "nosniff"
    assert download.headers["Cross-Origin-Resource-Policy"] == "same-origin"
    path = into / "recording.mp4"
    path.write_bytes(download.content)
    assert len(download.content) == result["size"]
    return result, path


async def test_av_sync_recording_keeps_both_tracks_duration_and_lip_sync(stack, tmp_path):
    _, relay = stack
    async with playing_av_sync(relay) as (peer, http):
        began = time.monotonic()
        started = await record(http, peer.session_id)
        assert started["state"] == "recording"
        status = await http.get(f"/api/v1/recordings/{started['recordingId']}")
        # whoever holds a recording's URL must not learn the session id (it ends the session
        # and reads its share link): not in the start's answer, the status, nor the end's
        for answer in (started, status.json()):
            assert "sessionId" not in answer and peer.session_id not in str(answer)
        again = await http.post("/api/v1/recordings", json={"sessionId": peer.session_id})
        assert again.status_code == 409 and again.json()["code"] == "ALREADY_RECORDING"
        early = await http.get(f"/api/v1/recordings/{started['recordingId']}/file")
        assert early.status_code == 409 and early.json()["code"] == "RECORDING_ACTIVE"
        await peer.wait_audio_frames(400, timeout=30)  # 8 s of what the browser gets
        wall = time.monotonic() - began
        result, path = await stop_and_download(http, started["recordingId"], tmp_path)
        repeat = await http.delete(f"/api/v1/recordings/{started['recordingId']}")
        assert repeat.json()["url"] == result["url"]  # stopping twice: the same answer
        assert peer.session_id not in repeat.text and peer.session_id not in str(result)
        everything = (await http.get("/api/v1/stats")).json()
        stats, live = everything["recordings"], everything["sessions"][0]

    print(f"recording: wall {wall:.3f} s, reported {result['duration']:.3f} s, {result['stats']}")
    assert {t["kind"] for t in result["tracks"]} == {"video", "audio"}
    assert stats["active"] == 0 and stats["finished"] == 1 and stats["frames_dropped"] == 0
    assert result["stats"]["video_frames_dropped"] == result["stats"]["audio_frames_dropped"] == 0
    d = decode(path)
    assert d.codecs == {"video": "h264", "audio": "aac"}
    print(f"file: {d.streams}, {len(d.video_times)} frames")
    for kind, seconds in d.streams.items():
        assert seconds == pytest.approx(wall, rel=0.02), (kind, seconds, wall)
    assert result["duration"] == pytest.approx(wall, rel=0.02)
    assert np.all(np.diff(d.video_times) > 0)
    flashes = d.flashes()
    assert len(flashes) >= 6, flashes
    # once a second of media, give or take the changes of the live output's delay
    assert np.all(abs(np.diff(flashes) - 1) < 0.5), flashes
    offsets, missing = av_offsets(d)
    print("A/V offsets in the file (click - flash, ms):", [round(o * 1000, 1) for o in offsets],
          f"{missing} clicks dropped live (audio_late_ms {live['audio_late_ms']})")
    assert len(offsets) >= 6 and (not missing or live["audio_late_ms"] > 0)
    assert max(abs(o) for o in offsets) < 0.010, offsets


async def test_recording_runs_on_across_a_cloud_hop_reconnect(stack, tmp_path):
    cloud, relay = stack
    async with playing_av_sync(relay) as (peer, http):
        (session,) = relay.app[RELAY_KEY].sessions.values()
        began = time.monotonic()
        started = await record(http, peer.session_id)
        await peer.wait_audio_frames(150, timeout=30)
        old_client = session.cloud
        await cloud.app[STATE_KEY].close_session(session.cloud.session_id)  # the hop dies
        await asyncio.wait_for(old_client.failed.wait(), 10)
        await wait_until(lambda: session.cloud_reconnects == 1 and session.cloud is not old_client,
                         timeout=20)
        mark = len(peer.received.video)
        await peer.wait_video_frames(72, timeout=30)  # 3 s of picture from the new hop
        assert len(peer.received.video) >= mark + 72
        wall = time.monotonic() - began
        result, path = await stop_and_download(http, started["recordingId"], tmp_path)

    print(f"across a reconnect: wall {wall:.3f} s, {result['duration']:.3f} s, {result['stats']}")
    d = decode(path)
    assert set(d.streams) == {"video", "audio"}
    for kind, seconds in d.streams.items():
        assert seconds == pytest.approx(wall, rel=0.02), (kind, seconds, wall)
    # plays from start to end: every frame decoded, in order, with no hole in either track
    assert np.all(np.diff(d.video_times) > 0) and np.all(np.diff(d.audio_times) > 0)
    assert d.video_times[-1] == pytest.approx(d.streams["video"], abs=0.1)
    assert np.diff(d.video_times).max() < 0.1  # the outage is a held picture, not a hole
    assert np.allclose(np.diff(d.audio_times), 1024 / 48000)  # sound is continuous
    assert len(d.audio) / 48000 == pytest.approx(d.streams["audio"], abs=0.05)
    assert result["stats"]["held_frames"] > 0  # the outage was filled
    flashes = d.flashes()
    assert flashes[-1] > d.streams["video"] - 2.0  # picture from the new hop made it in
    offsets, missing = av_offsets(d)
    print("A/V offsets across the reconnect (click - flash, ms):",
          [round(o * 1000, 1) for o in offsets], f"{missing} clicks missing")
    assert len(offsets) >= 3


async def test_recordings_api_errors_cap_and_cleanup(tmp_path):
    async with cloud_server() as cloud, relay_server(cloud) as relay:
        recordings: Recordings = relay.app[RELAY_KEY].recordings
        async with connected(relay.url, AV_SYNC) as peer, httpx.AsyncClient(
                base_url=relay.url, timeout=30) as http:
            unknown = await http.post("/api/v1/recordings", json={"sessionId": "nope"})
            assert unknown.status_code == 404 and unknown.json()["code"] == "UNKNOWN_SESSION"
            bad = await http.post("/api/v1/recordings", json={"sessionId": 3})
            assert bad.status_code == 400
            text = await http.post("/api/v1/recordings", content=b"{}",
                                   headers={"Content-Type": "text/plain"})
            assert text.status_code == 415  # same-origin rules apply here too
            missing = await http.delete("/api/v1/recordings/0123")
            assert missing.status_code == 404 and missing.json()["code"] == "NOT_FOUND"
            await peer.wait_audio_frames(25, timeout=30)
            assert peer.session_id is not None
            recordings.max_active = 1
            first = await record(http, peer.session_id)
            assert recordings.directory.is_dir()
            async with connected(relay.url, AV_SYNC) as other:
                assert other.session_id is not None
                over = await http.post("/api/v1/recordings", json={"sessionId": other.session_id})
                assert over.status_code == 429 and over.json()["code"] == "TOO_MANY_RECORDINGS"
            await peer.wait_audio_frames(50, timeout=30)
            # the page's session ends: its recording is finished and stays downloadable
            assert (await http.delete(f"/api/v1/webrtc/offer/{peer.session_id}")).status_code == 200
            await wait_until(lambda: recordings.get(first["recordingId"]).recorder.finished)
            status = (await http.get(f"/api/v1/recordings/{first['recordingId']}")).json()
            assert status["state"] == "finished" and status["duration"] > 0.5
            download = await http.get(status["url"])
            assert download.status_code == 200 and len(download.content) == status["size"]
        directory = recordings.directory
    assert not directory.exists()  # removed with the relay
