"""Recordings cannot fill the disk or outlive their relay: a size cap ends one cleanly with a
playable file, a write error (a really full disk, or an OSError at the file writer) ends it
as ``failed`` and the page is told on its data channel within a second, a disk below the
free-space reserve refuses a new one, and a killed relay's folder is removed by the next
relay while a live relay's folder stays. Real cloud app, relay and aiortc peers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import av
import httpx
import pytest

from scope_relay.local.recording.catalogue import Recordings
from scope_relay.local.recording.storage import MARKER, PREFIX, RecordingLimits, owner_marker
from scope_relay.local.server import RELAY_KEY

from helpers.full_disk import fail_video_writes_from
from helpers.peers import BrowserPeer, connected
from helpers.processes import relay_process
from helpers.servers import cloud_server, relay_server
from helpers.waiting import wait_until

#: colour and chords, generated fast: its file grows by ~50 kB/s (av-sync's black frames and
#: clicks take seconds to fill the muxer's first buffer)
BURSTY = {"pipeline_ids": ["bursty-av"], "generation_delay": 0.2}


class PageMessages:
    """What the relay tells the page on its ``parameters`` channel, with arrival times."""

    def __init__(self, peer: BrowserPeer):
        self.messages: list[tuple[float, dict[str, Any]]] = []
        self._arrived = asyncio.Event()

        @peer.channel.on("message")
        def on_message(message: str) -> None:
            self.messages.append((time.monotonic(), json.loads(message)))
            self._arrived.set()

    async def recording_ended(self, timeout: float) -> tuple[float, dict[str, Any]]:
        async def first() -> tuple[float, dict[str, Any]]:
            while True:
                for at, message in self.messages:
                    if message.get("type") == "recording":
                        return at, message
                self._arrived.clear()
                await self._arrived.wait()
        return await asyncio.wait_for(first(), timeout)


def frames_in(path: Path) -> dict[str, int]:
    """Decode the whole file as a player would: frames per stream kind."""
    counts: dict[str, int] = {}
    with av.open(str(path)) as container:
        for frame in container.decode(*container.streams):
            kind = "video" if isinstance(frame, av.VideoFrame) else "audio"
            counts[kind] = counts.get(kind, 0) + 1
    return counts


async def start_recording(http: httpx.AsyncClient, peer: BrowserPeer) -> dict[str, Any]:
    await asyncio.gather(peer.wait_audio_frames(25, timeout=30),
                         peer.wait_video_frames(6, timeout=30))
    await asyncio.wait_for(peer.channel_open.wait(), 10)
    response = await http.post("/api/v1/recordings", json={"sessionId": peer.session_id})
    assert response.status_code == 200, response.text
    return response.json()


async def record_until_it_ends(http: httpx.AsyncClient, peer: BrowserPeer,
                               timeout: float) -> tuple[dict[str, Any], dict[str, Any]]:
    """Start a recording and wait for the page's word that it ended by itself: the start's
    answer and that message."""
    told = PageMessages(peer)
    started = await start_recording(http, peer)
    _, message = await told.recording_ended(timeout=timeout)
    return started, message


@contextlib.asynccontextmanager
async def recording_stack(limits: RecordingLimits) -> AsyncIterator[tuple[Any, Recordings]]:
    async with cloud_server() as cloud, relay_server(cloud, recordings=limits) as relay:
        yield relay, relay.app[RELAY_KEY].recordings


@contextlib.asynccontextmanager
async def bursty_session(limits: RecordingLimits) -> AsyncIterator[
        tuple[Any, Recordings, BrowserPeer, httpx.AsyncClient]]:
    """A ``bursty-av`` session on a relay with these limits: ``(relay, its recordings,
    the session's peer, an HTTP client for the relay)``."""
    async with recording_stack(limits) as (relay, recordings), \
            connected(relay.url, BURSTY) as peer, \
            httpx.AsyncClient(base_url=relay.url, timeout=30) as http:
        yield relay, recordings, peer, http


async def test_size_cap_stops_the_recording_with_a_playable_file(tmp_path):
    limits = RecordingLimits(directory=tmp_path, max_bytes=150_000, check_interval=0.2)
    async with bursty_session(limits) as (relay, recordings, peer, http):
        started, message = await record_until_it_ends(http, peer, timeout=60)
        status = (await http.get(f"/api/v1/recordings/{started['recordingId']}")).json()
        elapsed_then = status["elapsed"]
        assert message["state"] == status["state"] == "stopped"
        assert message["reason"] == status["reason"] == "max_size"
        assert "size cap" in message["message"]
        assert message["url"] == status["url"]
        await wait_until(lambda: recordings.get(started["recordingId"]).recorder.finished)
        download = await http.get(status["url"])
        assert download.status_code == 200
        again = (await http.get(f"/api/v1/recordings/{started['recordingId']}")).json()
        assert again["elapsed"] == elapsed_then  # the clock stopped with the recording
        stats = (await http.get("/api/v1/stats")).json()["recordings"]
    path = tmp_path / "capped.mp4"
    path.write_bytes(download.content)
    size = len(download.content)
    print(f"size cap 150000 B: file {size} B, {status['duration']} s, {frames_in(path)}")
    assert size == status["size"]
    # past the cap by at most what ~one check interval writes, never runaway
    assert 150_000 <= size < 400_000
    counts = frames_in(path)
    assert counts.get("video", 0) > 10 and counts.get("audio", 0) > 10
    assert stats["stopped_by_cap"] == 1 and stats["active"] == 0


async def test_time_cap_stops_the_recording_at_its_length(tmp_path):
    limits = RecordingLimits(directory=tmp_path, max_seconds=2.0, check_interval=0.2)
    async with bursty_session(limits) as (relay, recordings, peer, http):
        started, message = await record_until_it_ends(http, peer, timeout=30)
        assert message["state"] == "stopped" and message["reason"] == "max_duration"
        await wait_until(lambda: recordings.get(started["recordingId"]).recorder.finished)
        download = await http.get(message["url"])
    path = tmp_path / "timed.mp4"
    path.write_bytes(download.content)
    with av.open(str(path)) as container:
        seconds = float(container.duration or 0) / av.time_base
    print(f"time cap 2 s: {message['duration']} s in the status, {seconds:.2f} s in the file")
    assert 2.0 <= message["duration"] < 3.0 and 2.0 <= seconds < 3.0


async def test_folder_budget_stops_a_recording_and_the_oldest_file_makes_room(tmp_path):
    limits = RecordingLimits(directory=tmp_path, max_bytes=0, total_bytes=200_000,
                             check_interval=0.2)
    async with bursty_session(limits) as (relay, recordings, peer, http):
        first, message = await record_until_it_ends(http, peer, timeout=60)
        assert message["state"] == "stopped" and message["reason"] == "folder_budget"
        await wait_until(lambda: recordings.get(first["recordingId"]).recorder.finished)
        first_file = recordings.get(first["recordingId"]).recorder.path
        assert first_file.stat().st_size >= 200_000
        # the folder is full of a finished file: it goes to make room for the next one
        second = await start_recording(http, peer)
        assert not first_file.exists()
        gone = await http.get(f"/api/v1/recordings/{first['recordingId']}")
        assert gone.status_code == 404
        stats = (await http.get("/api/v1/stats")).json()["recordings"]
        assert stats["expired"] == 1 and stats["active"] == 1 and stats["stopped_by_cap"] == 1
        assert (await http.delete(f"/api/v1/recordings/{second['recordingId']}")).status_code == 200


@pytest.fixture
def failing_writer(monkeypatch) -> list[float]:
    """The file writer raises ENOSPC at its 40th video frame, as a full disk would; the
    list gets the time it raised."""
    return fail_video_writes_from(monkeypatch, 40)


async def test_write_error_fails_the_recording_and_the_page_is_told_at_once(
        tmp_path, failing_writer):
    async with bursty_session(RecordingLimits(directory=tmp_path)) as (relay, recordings, peer, http):
        told = PageMessages(peer)
        started = await start_recording(http, peer)
        arrived, message = await told.recording_ended(timeout=30)
        latency = arrived - failing_writer[0]
        print(f"failed recording told to the page {latency * 1000:.0f} ms after the write error")
        assert latency < 1.0
        assert message["state"] == "failed" and message["reason"] == "write_error"
        assert "No space left on device" in message["error"]
        status = (await http.get(f"/api/v1/recordings/{started['recordingId']}")).json()
        assert status["state"] == "failed" and "Errno 28" in status["error"]
        # what was written before the error is finished and kept: it plays
        assert status["url"] == message["url"]
        await wait_until(lambda: recordings.get(started["recordingId"]).recorder.finished)
        download = await http.get(status["url"])
        assert download.status_code == 200
        # live playback went on, and the session can record again
        await peer.wait_audio_frames(25, timeout=10)
        stats = (await http.get("/api/v1/stats")).json()["recordings"]
        assert stats["failed"] == 1 and stats["active"] == 0
    path = tmp_path / "partial.mp4"
    path.write_bytes(download.content)
    assert frames_in(path).get("video", 0) >= 30


async def test_a_new_recording_below_the_free_space_reserve_is_refused(tmp_path):
    limits = RecordingLimits(directory=tmp_path, reserve_bytes=1 << 60)  # more than any disk
    async with bursty_session(limits) as (relay, recordings, peer, http):
        await peer.wait_audio_frames(10, timeout=30)
        response = await http.post("/api/v1/recordings", json={"sessionId": peer.session_id})
        assert response.status_code == 507, response.text
        assert response.json()["code"] == "INSUFFICIENT_STORAGE"
        assert "free disk space" in response.json()["error"]
        stats = (await http.get("/api/v1/stats")).json()["recordings"]
        assert stats["refused_storage"] == 1 and stats["active"] == 0
        # the session plays on
        await peer.wait_audio_frames(10, timeout=10)


def _can_mount() -> bool:
    return sys.platform.startswith("linux") and os.geteuid() == 0


@contextlib.contextmanager
def small_tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True, text=True)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(disk: Path) -> None:
    """Write until the disk says it is full (unbuffered: every byte that fits is written)."""
    fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (1 << 16, 1):
            with contextlib.suppress(OSError):
                while os.write(fd, b"\0" * size):
                    pass
    finally:
        os.close(fd)


@pytest.mark.skipif(not _can_mount(), reason="needs root on Linux to mount a small tmpfs")
async def test_a_really_full_disk_fails_the_recording_and_refuses_the_next(tmp_path):
    with small_tmpfs(tmp_path / "disk", "8m") as disk:
        limits = RecordingLimits(directory=disk, reserve_bytes=0, check_interval=60)
        async with bursty_session(limits) as (relay, recordings, peer, http):
            told = PageMessages(peer)
            started = await start_recording(http, peer)
            recorder = recordings.get(started["recordingId"]).recorder
            await wait_until(lambda: recorder.stats()["bytes"] > 0 or recorder.path.exists())
            await asyncio.to_thread(fill, disk)
            filled = time.monotonic()
            arrived, message = await told.recording_ended(timeout=30)
            print(f"really full disk: told after {arrived - filled:.2f} s: {message}")
            assert message["state"] == "failed" and "Errno 28" in message["error"]
            assert recorder.failed_at is not None and arrived - recorder.failed_at < 1.0
            await wait_until(lambda: recorder.finished)
            status = (await http.get(f"/api/v1/recordings/{started['recordingId']}")).json()
            assert status["state"] == "failed"
            if "url" in status:  # finished despite the full disk: it must play
                download = await http.get(status["url"])
                local = tmp_path / "partial.mp4"
                local.write_bytes(download.content)
                assert frames_in(local)
            else:  # no playable file: nothing left on the disk, and no download
                assert not recorder.path.exists()
                missing = await http.get(recordings.get(started["recordingId"]).url)
                assert missing.status_code == 404
            # a new recording on the full disk is refused up front, not accepted to fail
            recordings.limits.reserve_bytes = 1 << 20
            refused = await http.post("/api/v1/recordings", json={"sessionId": peer.session_id})
            assert refused.status_code == 507 and refused.json()["code"] == "INSUFFICIENT_STORAGE"


def _write_marker(folder: Path, marker: dict[str, Any]) -> Path:
    folder.mkdir(parents=True)
    (folder / MARKER).write_text(json.dumps(marker))
    (folder / "0123.mp4").write_bytes(b"partial")
    return folder


async def test_a_killed_relays_folder_is_removed_at_start_and_a_live_ones_kept(tmp_path):
    base = tmp_path / "recordings"
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    dead_marker = owner_marker(gone.pid)
    gone.wait()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        dead = _write_marker(base / f"{PREFIX}dead{uuid.uuid4().hex[:6]}", dead_marker)
        live = _write_marker(base / f"{PREFIX}live", owner_marker(alive.pid))
        reused = _write_marker(base / f"{PREFIX}reused",  # the live pid, another start
                               {**owner_marker(alive.pid), "started": "1"})
        unmarked = base / f"{PREFIX}unmarked"
        unmarked.mkdir()
        other_host = _write_marker(base / f"{PREFIX}elsewhere",
                                   {**dead_marker, "host": "another-machine"})
        async with recording_stack(RecordingLimits(directory=base)) as (relay, recordings):
            assert not dead.exists()
            assert live.exists() and unmarked.exists() and other_host.exists()
            assert not reused.exists() or owner_marker(alive.pid)["started"] is None
            own = await asyncio.to_thread(lambda: recordings.directory)
            assert json.loads((own / MARKER).read_text())["pid"] == os.getpid()
            async with httpx.AsyncClient(base_url=relay.url) as http:
                stats = (await http.get("/api/v1/stats")).json()
            assert stats["recordings"]["stale_folders_removed"] >= 1
        assert not own.exists() and live.exists()  # a relay removes only its own on close
    finally:
        alive.kill()
        alive.wait()


async def test_a_relay_killed_while_recording_leaves_a_folder_the_next_one_removes(tmp_path):
    """kill -9 of a real relay process mid-recording, then a new relay on the same
    ``--recordings-dir``: the folder is there after the kill, gone once the next has started."""
    base = tmp_path / "recordings"
    async with cloud_server() as cloud:
        async with relay_process(cloud, "--recordings-dir", str(base),
                                 "--recording-max-gib", "1") as relay, \
                connected(relay.url, BURSTY) as peer, \
                httpx.AsyncClient(base_url=relay.url, timeout=30) as http:
            await start_recording(http, peer)
            await wait_until(lambda: any(base.glob(f"{PREFIX}*/*.mp4")), timeout=20)
            (folder,) = base.glob(f"{PREFIX}*")
            relay.proc.kill()  # SIGKILL: no cleanup runs
            await relay.proc.wait()
        assert folder.exists() and any(folder.glob("*.mp4"))
        async with relay_process(cloud, "--recordings-dir", str(base)) as second:
            assert not folder.exists()
            assert any("left by a relay that is gone" in line for line in second.output)
