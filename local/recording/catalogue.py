"""The relay's recordings: which exist, whose session they tap, where their files are.

Files live in one temporary directory the relay owns, removed when it closes (a download
is the way to keep one). At most ``MAX_ACTIVE`` recordings run at once, since each one
costs an encoder's CPU; more are refused (``TOO_MANY_RECORDINGS``, 429). At most
``MAX_KEPT`` finished files are kept; a newer one removes the oldest (counted). A recording
whose session ends is finished then, and stays downloadable.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scope_relay.local.playout.release_tracks import AudioProcessingTrack, CloudTrack
from scope_relay.local.recording.mp4_file import CONTENT_TYPE, SUFFIX
from scope_relay.local.recording.recorder import Recorder
from scope_relay.protocol.errors import (
    AlreadyRecording,
    NotFound,
    NothingToRecord,
    ProtocolError,
    RecordingActive,
    RecordingFailed,
    TooManyRecordings,
)
from scope_relay.util.tasks import OwnedTasks, RunOnce

logger = logging.getLogger(__name__)

MAX_ACTIVE = 4
MAX_KEPT = 16


@dataclass
class Recording:
    recording_id: str
    session_id: str
    recorder: Recorder
    filename: str  # offered to the browser when downloading
    tracks: list[CloudTrack | AudioProcessingTrack]
    started: float = field(default_factory=time.monotonic)
    stopped: float | None = None
    finish: RunOnce | None = None

    @property
    def url(self) -> str:
        return f"/api/v1/recordings/{self.recording_id}/file"

    @property
    def active(self) -> bool:
        return self.stopped is None

    def detach(self) -> None:
        """No more frames: taken off the tracks' taps (the frame being sent is the last)."""
        for track in self.tracks:
            for tap in (self.recorder.tap_video, self.recorder.tap_audio):
                if tap in track.taps:
                    track.taps.remove(tap)

    def describe(self) -> dict[str, Any]:
        """What the API says about it: while recording, and once finished."""
        recorder = self.recorder
        out: dict[str, Any] = {
            "recordingId": self.recording_id,
            "sessionId": self.session_id,
            "state": "recording" if self.active else "failed" if recorder.error else "finished",
            "elapsed": round((self.stopped or time.monotonic()) - self.started, 3),
            "stats": recorder.stats(),
        }
        if not self.active and recorder.error is None:
            out.update(url=self.url, duration=recorder.duration, tracks=recorder.file.streams,
                       size=recorder.path.stat().st_size if recorder.path.exists() else 0,
                       filename=self.filename, contentType=CONTENT_TYPE)
        if recorder.error:
            out["error"] = recorder.error
        return out


def _download_name(label: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", label).strip("-")[:60] or "session"
    return f"scope-relay-{safe}-{time.strftime('%Y%m%d-%H%M%S')}{SUFFIX}"


class Recordings:
    def __init__(self, *, max_active: int = MAX_ACTIVE, max_kept: int = MAX_KEPT):
        self.max_active = max_active
        self.max_kept = max_kept
        self._dir: Path | None = None
        self._items: dict[str, Recording] = {}  # oldest first
        self._tasks = OwnedTasks()
        self.refused = 0  # over the cap
        self.expired = 0  # finished files removed to keep at most max_kept

    @property
    def directory(self) -> Path:
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="scope-relay-recordings-"))
        return self._dir

    def _active(self) -> list[Recording]:
        return [r for r in self._items.values() if r.active]

    def start(self, session_id: str, video: CloudTrack | None, audio: AudioProcessingTrack | None,
              label: str, output_delay: Callable[[], float] = lambda: 0.0) -> Recording:
        """Start recording what ``video`` and ``audio`` send from their next frame on.
        ``output_delay``: see :class:`Recorder`."""
        if video is None and audio is None:
            raise NothingToRecord("this session sends no media to record")
        if any(r.session_id == session_id for r in self._active()):
            raise AlreadyRecording("this session is already being recorded")
        if len(self._active()) >= self.max_active:
            self.refused += 1
            raise TooManyRecordings(f"at most {self.max_active} recordings at once")
        recording_id = secrets.token_hex(16)
        recorder = Recorder(self.directory / f"{recording_id}{SUFFIX}",
                            video=video is not None, audio=audio is not None,
                            output_delay=output_delay)
        tracks: list[CloudTrack | AudioProcessingTrack] = []
        recorder.start()
        if video is not None:
            video.taps.append(recorder.tap_video)
            tracks.append(video)
        if audio is not None:
            audio.taps.append(recorder.tap_audio)
            tracks.append(audio)
        recording = Recording(recording_id, session_id, recorder, _download_name(label), tracks)
        self._items[recording_id] = recording
        logger.info("recording %s of session %s started", recording_id[:8], session_id[:8])
        return recording

    def get(self, recording_id: str) -> Recording:
        recording = self._items.get(recording_id)
        if recording is None:
            raise NotFound(f"unknown recording {recording_id!r}")
        return recording

    async def stop(self, recording_id: str) -> Recording:
        """Finish it (once, however many ask); a finished one is returned as it is."""
        recording = self.get(recording_id)
        if recording.finish is None:
            recording.finish = RunOnce(lambda: self._finish(recording))
        await recording.finish()
        if recording.recorder.error is not None:
            raise RecordingFailed(f"recording failed: {recording.recorder.error}")
        return recording

    async def _finish(self, recording: Recording) -> None:
        recording.detach()
        recording.stopped = time.monotonic()
        await recording.recorder.stop()
        logger.info("recording %s finished: %.1f s, %s", recording.recording_id[:8],
                    recording.recorder.duration, recording.recorder.stats())
        self._expire()

    def _expire(self) -> None:
        finished = [r for r in self._items.values() if r.recorder.finished]
        for old in finished[:max(0, len(finished) - self.max_kept)]:
            del self._items[old.recording_id]
            old.recorder.path.unlink(missing_ok=True)
            self.expired += 1

    def file(self, recording_id: str) -> Recording:
        """A finished recording whose file can be downloaded."""
        recording = self.get(recording_id)
        if recording.active or not recording.recorder.finished:
            raise RecordingActive("still recording: stop it first")
        if recording.recorder.error is not None or not recording.recorder.path.exists():
            raise NotFound("this recording has no file")
        return recording

    def session_closed(self, session_id: str) -> None:
        """Its session ended: finish its recording now (it stays downloadable)."""
        for recording in self._active():
            if recording.session_id == session_id:
                self._tasks.spawn(self._stop_quietly(recording.recording_id))

    async def _stop_quietly(self, recording_id: str) -> None:
        try:
            await self.stop(recording_id)
        except ProtocolError as exc:  # already logged by the recorder; DELETE will say so
            logger.warning("recording %s: %s", recording_id[:8], exc.message)

    async def close(self) -> None:
        """Relay shutdown: stop every recorder without finishing files, remove them all."""
        await self._tasks.cancel_all()
        for recording in list(self._items.values()):
            recording.detach()
            await recording.recorder.abort()
        self._items.clear()
        if self._dir is not None:
            await asyncio.to_thread(shutil.rmtree, self._dir, True)
            self._dir = None

    def stats(self) -> dict[str, int]:
        active = self._active()
        return {
            "active": len(active),
            "finished": len(self._items) - len(active),
            "refused": self.refused,
            "expired": self.expired,
            "frames_dropped": sum(sum(r.recorder.dropped.values()) for r in self._items.values()),
        }
