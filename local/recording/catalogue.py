"""The relay's recordings: which exist, whose session they tap, where their files are.

Files live in one folder the relay owns (``storage.py``: under ``--recordings-dir``, with an
owner marker), removed when it closes (a download is the way to keep one); folders left by
a killed relay are removed when the next one starts. At most ``MAX_ACTIVE`` recordings run
at once, since each one costs an encoder's CPU; more are refused (``TOO_MANY_RECORDINGS``,
429). At most ``MAX_KEPT`` finished files are kept, and the oldest finished ones also make
room for a new recording within the folder's total budget (both counted as expired). A
recording is refused (``INSUFFICIENT_STORAGE``, 507) when the disk has less free space than
the reserve, or the folder is full of recordings still running. A recording whose session
ends is finished then, and stays downloadable; one that ends by itself (a cap: ``stopped``;
a write error: ``failed``) is ended at once, and its page is told (``on_end``).

What the API says about a recording never includes its session's id: that id lets its
holder end the session and read its share link, and a recording's URL travels further
(it is downloaded, pasted, logged) than the page that made it.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scope_relay.local.playout.decoder import LazyDecoder
from scope_relay.local.playout.release_tracks import AudioProcessingTrack, CloudTrack
from scope_relay.local.recording.mp4_file import CONTENT_TYPE, SUFFIX
from scope_relay.local.recording.recorder import Recorder
from scope_relay.local.recording.storage import (
    RecordingLimits,
    free_bytes,
    make_folder,
    remove_stale_folders,
)
from scope_relay.protocol.errors import (
    AlreadyRecording,
    InsufficientStorage,
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
    tracks: list[CloudTrack | AudioProcessingTrack | LazyDecoder]
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

    @property
    def state(self) -> str:
        recorder = self.recorder
        if recorder.error is not None:
            return "failed"
        if self.active:
            return "recording"
        return "stopped" if recorder.end_reason else "finished"

    @property
    def downloadable(self) -> bool:
        """Ended, its file finished (the worker sets ``kept`` once it is) and playable."""
        return not self.active and self.recorder.kept

    def describe(self) -> dict[str, Any]:
        """What the API says about it: while recording, and once ended. No session id."""
        recorder = self.recorder
        out: dict[str, Any] = {
            "recordingId": self.recording_id,
            "state": self.state,
            "elapsed": round((self.stopped or time.monotonic()) - self.started, 3),
            "stats": recorder.stats(),
        }
        if recorder.end_reason:
            out.update(reason=recorder.end_reason, message=recorder.end_message)
        if recorder.error:
            out.update(reason="write_error", error=recorder.error)
        if not self.active and recorder.kept:
            out.update(url=self.url, duration=recorder.duration, tracks=recorder.file.streams,
                       size=recorder.bytes_written, filename=self.filename,
                       contentType=CONTENT_TYPE)
        return out

    def ended_message(self) -> dict[str, Any]:
        """What its page is told when it ended by itself (the ``parameters`` channel)."""
        described = self.describe()
        out = {"type": "recording", "recordingId": self.recording_id, "state": self.state}
        out.update((key, described[key]) for key in ("reason", "message", "error", "url",
                                                     "duration") if key in described)
        return out


def _download_name(label: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", label).strip("-")[:60] or "session"
    return f"scope-relay-{safe}-{time.strftime('%Y%m%d-%H%M%S')}{SUFFIX}"


class Recordings:
    def __init__(self, limits: RecordingLimits | None = None, *, max_active: int = MAX_ACTIVE,
                 max_kept: int = MAX_KEPT):
        self.limits = limits or RecordingLimits()
        self.max_active = max_active
        self.max_kept = max_kept
        self._dir: Path | None = None
        self._items: dict[str, Recording] = {}  # oldest first
        self._tasks = OwnedTasks()
        self._start_lock = asyncio.Lock()
        #: the recorders writing now, for their workers' budget check (replaced, not changed)
        self._writers: tuple[Recorder, ...] = ()
        self._finished_bytes = 0  # what the finished files take
        #: told (on the loop) when a recording ended by itself: (session id, message)
        self.on_end: Callable[[str, dict[str, Any]], None] = lambda session_id, message: None
        self.refused = 0  # over the cap
        self.refused_storage = 0  # no room on the disk or in the folder
        self.expired = 0  # finished files removed (max_kept, or room for a new one)
        self.stopped_by_cap = 0
        self.failed = 0
        self.stale_folders_removed = 0

    async def open(self) -> None:
        """At relay start: remove the folders of relays that were killed."""
        removed = await asyncio.to_thread(remove_stale_folders, self.limits.base())
        self.stale_folders_removed += len(removed)

    @property
    def directory(self) -> Path:
        """This relay's folder, made on first use (blocking: call it off the loop)."""
        if self._dir is None:
            self._dir = make_folder(self.limits.base())
        return self._dir

    def _active(self) -> list[Recording]:
        return [r for r in self._items.values() if r.active]

    def _others_bytes(self, me: Recorder) -> int:
        """Read by a recorder's worker thread: only an int and a tuple swapped on the loop."""
        return self._finished_bytes + sum(r.bytes_written for r in self._writers if r is not me)

    async def _make_room(self) -> None:
        """Refuse when the disk is below its reserve; let the oldest finished files go while
        the folder has no room for one more recording; refuse if it still has none."""
        limits = self.limits
        directory = await asyncio.to_thread(lambda: self.directory)
        free = await asyncio.to_thread(free_bytes, directory)
        if free < limits.reserve_bytes:
            self.refused_storage += 1
            raise InsufficientStorage(
                f"not enough free disk space to record: {free / 2**20:.0f} MiB free, "
                f"{limits.reserve_bytes / 2**20:.0f} MiB kept free (--recordings-reserve-gib)")
        if not limits.total_bytes:
            return
        need = min(limits.max_bytes, limits.total_bytes)  # room for one whole recording
        while self._used_bytes() + need > limits.total_bytes:
            finished = [r for r in self._items.values() if r.recorder.finished]
            if not finished:
                break
            self._forget(finished[0])
        if self._used_bytes() >= limits.total_bytes:
            self.refused_storage += 1
            raise InsufficientStorage(
                f"the recordings folder is full ({limits.total_bytes / 2**20:.0f} MiB, "
                "--recordings-total-gib) with recordings still running")

    def _used_bytes(self) -> int:
        return self._finished_bytes + sum(r.bytes_written for r in self._writers)

    async def start(self, session_id: str, video: CloudTrack | None,
                    audio: AudioProcessingTrack | None, label: str,
                    output_delay: Callable[[], float] = lambda: 0.0) -> Recording:
        """Start recording what ``video`` and ``audio`` send from their next frame on.
        ``output_delay``: see :class:`Recorder`."""
        if video is None and audio is None:
            raise NothingToRecord("this session sends no media to record")
        async with self._start_lock:  # one at a time: the checks hold until it is started
            self._check_can_start(session_id)
            await self._make_room()
            self._check_can_start(session_id)  # (a session may have gone meanwhile: no)
            return self._start(session_id, video, audio, label, output_delay)

    def _check_can_start(self, session_id: str) -> None:
        if any(r.session_id == session_id for r in self._active()):
            raise AlreadyRecording("this session is already being recorded")
        if len(self._active()) >= self.max_active:
            self.refused += 1
            raise TooManyRecordings(f"at most {self.max_active} recordings at once")

    def _start(self, session_id: str, video: CloudTrack | None,
               audio: AudioProcessingTrack | None, label: str,
               output_delay: Callable[[], float]) -> Recording:
        assert self._dir is not None  # made by _make_room
        recording_id = secrets.token_hex(16)
        recorder = Recorder(self._dir / f"{recording_id}{SUFFIX}",
                            video=video is not None, audio=audio is not None,
                            output_delay=output_delay, limits=self.limits,
                            others_bytes=lambda: self._others_bytes(recorder),
                            on_end=lambda: self._ended_by_itself(recording_id))
        tracks: list[CloudTrack | AudioProcessingTrack | LazyDecoder] = []
        recorder.start()
        if video is not None and video.decoder is not None:
            # forwarded video is decoded for the recording only while it runs
            video.decoder.add_tap(recorder.tap_video)
            tracks.append(video.decoder)
        elif video is not None:
            video.taps.append(recorder.tap_video)
            tracks.append(video)
        if audio is not None:
            audio.taps.append(recorder.tap_audio)
            tracks.append(audio)
        recording = Recording(recording_id, session_id, recorder, _download_name(label), tracks)
        self._items[recording_id] = recording
        self._writers = (*self._writers, recorder)
        logger.info("recording %s of session %s started", recording_id[:8], session_id[:8])
        return recording

    def _ended_by_itself(self, recording_id: str) -> None:
        """A cap or a failure ended it (on the loop): detach it now, tell its page, and
        finish ending it in the background."""
        recording = self._items.get(recording_id)
        if recording is None or not recording.active:
            return  # it was being stopped anyway (DELETE, its session ended, shutdown)
        recording.detach()
        recording.stopped = time.monotonic()
        if recording.recorder.error is not None:
            self.failed += 1
        else:
            self.stopped_by_cap += 1
        try:
            self.on_end(recording.session_id, recording.ended_message())
        except Exception:  # telling is best effort; the status says it anyway
            logger.exception("recording %s: could not tell its page", recording_id[:8])
        self._tasks.spawn(self._stop_quietly(recording_id))

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
        if recording.stopped is None:
            recording.stopped = time.monotonic()
        await recording.recorder.stop()
        self._writers = tuple(r for r in self._writers if r is not recording.recorder)
        self._finished_bytes += recording.recorder.bytes_written
        logger.info("recording %s finished: %.1f s, %s", recording.recording_id[:8],
                    recording.recorder.duration, recording.recorder.stats())
        self._expire()

    def _expire(self) -> None:
        finished = [r for r in self._items.values() if r.recorder.finished]
        for old in finished[:max(0, len(finished) - self.max_kept)]:
            self._forget(old)

    def _forget(self, old: Recording) -> None:
        """A finished recording goes, with its file."""
        del self._items[old.recording_id]
        self._finished_bytes -= old.recorder.bytes_written
        old.recorder.path.unlink(missing_ok=True)
        self.expired += 1

    def file(self, recording_id: str) -> Recording:
        """A finished recording whose file can be downloaded."""
        recording = self.get(recording_id)
        if recording.active or not (recording.recorder.kept or recording.recorder.finished):
            raise RecordingActive("still recording: stop it first")
        if not recording.downloadable or not recording.recorder.path.exists():
            raise NotFound("this recording has no file (it failed before anything playable "
                           "was written)")
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
        self._writers = ()
        self._finished_bytes = 0
        if self._dir is not None:
            await asyncio.to_thread(shutil.rmtree, self._dir, True)
            self._dir = None

    def stats(self) -> dict[str, int]:
        active = self._active()
        return {
            "active": len(active),
            "finished": len(self._items) - len(active),
            "refused": self.refused,
            "refused_storage": self.refused_storage,
            "expired": self.expired,
            "stopped_by_cap": self.stopped_by_cap,
            "failed": self.failed,
            "bytes": self._used_bytes(),
            "stale_folders_removed": self.stale_folders_removed,
            "frames_dropped": sum(sum(r.recorder.dropped.values()) for r in self._items.values()),
        }
