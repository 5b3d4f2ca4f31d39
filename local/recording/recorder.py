"""Recorder: one recording of exactly what a session sends to the browser.

The output tracks hand each outgoing frame to the recorder's taps on the event loop; a
tap only puts it on a bounded queue (full: the frame is dropped and counted, never
waited for), so recording cannot hold up live playback. One worker thread owns the rest:
it places each frame on the file's timeline by its pts (``recording_timeline``: the live
A/V alignment, gaps filled, never backwards) and encodes and muxes it with PyAV
(``recording_file``). PyAV releases the GIL while it encodes.

A frame dropped at the queue becomes a held frame or silence in the file, like any other
gap, so the file's timing is not disturbed by drops, only its content.

The worker also keeps the recording within its limits (``storage.RecordingLimits``): every
``check_interval`` seconds, not per frame, it looks at the file's size, its duration, the
folder's total and the disk's free space. A cap reached finishes the file there (playable)
and ends the recording as ``stopped`` with the reason; a write error (a full disk, any
``OSError``, any other failure) ends it as ``failed``: the file is finished if it still
can be and kept only if it then opens, else removed. Either way the event loop is told at
once (``on_end``), so the page hears of it within a second.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import av

from scope_relay.local.recording.mp4_file import RecordingFile
from scope_relay.local.recording.storage import RecordingLimits, free_bytes
from scope_relay.local.recording.timeline import RecordingTimeline
from scope_relay.media.audio import frame_to_s16

logger = logging.getLogger(__name__)

#: Frames waiting for the worker: about 3 s of 30 fps video with its 20 ms audio frames.
MAX_QUEUE = 256
#: Audio held while waiting for the first picture; past this the file is audio only.
MAX_AUDIO_BEFORE_VIDEO = 10.0

_STOP = object()

#: Why a recording stopped by itself (``end_reason``), with the words said to the user.
CAP_MESSAGES = {
    "max_duration": "the recording reached its time cap ({})",
    "max_size": "the recording reached its size cap ({})",
    "folder_budget": "the recordings folder reached its total budget ({})",
    "disk_reserve": "the disk is nearly full (less than {} free)",
}


def _bytes_in_words(n: float) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n:.0f} B"


def _playable(path: Path) -> bool:
    """Whether the finished file opens and yields a frame (what a player would do)."""
    try:
        with av.open(str(path)) as container:
            if not container.streams:
                return False
            for _ in container.decode(container.streams[0]):
                return True
    except Exception:  # av.error.* or OSError: not a file anyone can play
        return False
    return False


class Recorder:
    """Taps for the output tracks, a bounded queue, and the worker thread writing the file."""

    def __init__(self, path: Path, *, video: bool, audio: bool,
                 output_delay: Callable[[], float] = lambda: 0.0, max_queue: int = MAX_QUEUE,
                 limits: RecordingLimits | None = None,
                 others_bytes: Callable[[], int] = lambda: 0,
                 on_end: Callable[[], None] = lambda: None):
        """``output_delay``: how long after its pts the relay sends a frame now, less a
        constant (its rises are the pauses of the output: ``recording_timeline``).
        ``others_bytes``: what the folder's other files take (read from the worker thread).
        ``on_end``: called on the event loop when the recording ended by itself (a cap, a
        failure), not when asked to stop."""
        self.path = path
        self.limits = limits or RecordingLimits()
        self._others_bytes = others_bytes
        self._on_end = on_end
        self._loop: asyncio.AbstractEventLoop | None = None
        self._writing = True  # the worker still writes frames to the file
        self._next_check = 0.0
        #: set by the worker when it ended the recording itself: a cap's name, and words
        self.end_reason: str | None = None
        self.end_message: str | None = None
        self.kept = False  # the file is finished and playable: it may be downloaded
        self.failed_at: float | None = None  # (monotonic) when the worker met its error
        self.bytes_written = 0  # the file's size as last looked at
        self._output_delay = output_delay
        self.file = RecordingFile(path, video=video, audio=audio)
        self.timeline = RecordingTimeline(audio=audio)
        self._queue: queue.Queue[Any] = queue.Queue(max_queue)
        self._closing = False
        self._aborted = False
        self._done: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(target=self._run, name=f"recorder {path.stem}",
                                        daemon=True)
        self.error: str | None = None
        self.cpu_seconds = 0.0  # the worker thread's, once it has finished
        self.received = {"video": 0, "audio": 0}
        self.dropped = {"video": 0, "audio": 0}  # the queue was full
        self.video_without_stream = 0  # frames after the file gave up on a picture
        self.max_queued = 0

    def start(self) -> None:
        """On the event loop (it is told there when the recording ends by itself)."""
        self._loop = asyncio.get_running_loop()
        self._next_check = time.monotonic() + self.limits.check_interval
        self._thread.start()

    # --- taps (event loop) -------------------------------------------------------------
    def tap_video(self, frame: av.AudioFrame | av.VideoFrame) -> None:
        self._put("video", frame)

    def tap_audio(self, frame: av.AudioFrame | av.VideoFrame) -> None:
        self._put("audio", frame)

    def _put(self, kind: str, frame: av.AudioFrame | av.VideoFrame) -> None:
        if self._closing:
            return
        try:  # the pts now: the frame object is the one being sent
            self._queue.put_nowait((kind, frame.pts, self._output_delay(), frame))
        except queue.Full:
            self.dropped[kind] += 1
            return
        self.received[kind] += 1
        self.max_queued = max(self.max_queued, self._queue.qsize())

    # --- ending ------------------------------------------------------------------------
    async def stop(self) -> None:
        """Write what is queued, finish the file and wait for the worker to end."""
        await self._end(abort=False)

    async def abort(self) -> None:
        """End without finishing the file (it is about to be deleted)."""
        await self._end(abort=True)

    async def _end(self, *, abort: bool) -> None:
        self._closing = True
        self._aborted = self._aborted or abort
        if self._thread.is_alive() and not self._done.done():
            # may wait for one free slot while the worker drains: never on the event loop
            await asyncio.to_thread(self._queue.put, _STOP)
        if self._thread.ident is not None:
            await asyncio.wrap_future(self._done)

    @property
    def finished(self) -> bool:
        return self._done.done()

    # --- the worker thread -------------------------------------------------------------
    def _run(self) -> None:
        started = time.thread_time()
        try:
            while (item := self._queue.get()) is not _STOP:
                if self._writing and not self._aborted:
                    self._guarded(self._write, *item)
                    if self._writing and time.monotonic() >= self._next_check:
                        self._guarded(self._check)
            if self._aborted:
                self.file.abort()
            elif self._writing:
                self._writing = False
                self._guarded(self._finish)
        finally:
            self.cpu_seconds = time.thread_time() - started
            self._done.set_result(None)

    def _guarded(self, action: Any, *args: Any) -> None:
        """Run a step of the worker; a failure fails the recording, live playback goes on."""
        try:
            action(*args)
        except Exception as exc:
            logger.exception("recording %s failed", self.path.name)
            self.error = f"{type(exc).__name__}: {exc}"
            self.failed_at = time.monotonic()
            self._writing = False
            self._closing = True
            self._salvage()
            self._tell_loop()

    def _salvage(self) -> None:
        """After a failure: finish the file if that still works and keep it only if it
        then plays; otherwise remove it (a broken file is nothing to download)."""
        try:
            self.file.close()
            self.kept = _playable(self.path)
        except Exception as exc:  # the disk is still full, the muxer is broken, ...
            logger.warning("recording %s: the partial file cannot be finished: %s",
                           self.path.name, exc)
            self.file.abort()
            self.kept = False
        if not self.kept:
            self.path.unlink(missing_ok=True)
        self._measure()

    def _tell_loop(self) -> None:
        if self._loop is not None and not self._loop.is_closed():
            try:
                self._loop.call_soon_threadsafe(self._on_end)
            except RuntimeError:  # the loop closed meanwhile: nobody to tell
                pass

    def _measure(self) -> int:
        try:
            self.bytes_written = os.stat(self.path).st_size
        except FileNotFoundError:
            self.bytes_written = 0
        return self.bytes_written

    def _check(self) -> None:
        """The caps, every ``check_interval`` s: the first one reached ends the recording."""
        limits = self.limits
        self._next_check = time.monotonic() + limits.check_interval
        size = self._measure()
        reason, figure = None, ""
        if limits.max_seconds and self.timeline.end >= limits.max_seconds:
            reason, figure = "max_duration", f"{limits.max_seconds:g} s"
        elif limits.max_bytes and size >= limits.max_bytes:
            reason, figure = "max_size", _bytes_in_words(limits.max_bytes)
        elif limits.total_bytes and size + self._others_bytes() >= limits.total_bytes:
            reason, figure = "folder_budget", _bytes_in_words(limits.total_bytes)
        elif limits.reserve_bytes and free_bytes(self.path.parent) < limits.reserve_bytes:
            reason, figure = "disk_reserve", _bytes_in_words(limits.reserve_bytes)
        if reason is None:
            return
        self.end_reason, self.end_message = reason, CAP_MESSAGES[reason].format(figure)
        logger.warning("recording %s stopped: %s", self.path.name, self.end_message)
        self._writing = False
        self._closing = True
        self._finish()  # (a failure here is the recording's failure: _guarded)
        self._tell_loop()

    def _write(self, kind: str, pts: int, delay: float, frame: Any) -> None:
        if kind == "video":
            placed = self.timeline.place_video(pts, delay)
            if placed is None:
                return
            held, at = placed
            for t in held:
                self.file.repeat_video(t)
            if not self.file.write_video(frame, at):
                self.video_without_stream += 1
            return
        samples = frame_to_s16(frame)
        placement = self.timeline.place_audio(pts, samples.shape[1], delay)
        self.file.write_silence(placement.silence)
        self.file.write_audio(samples[:, placement.skip:])
        if self.file.held_audio_seconds > MAX_AUDIO_BEFORE_VIDEO:
            logger.warning("recording %s: no picture after %.0f s of sound, recording sound only",
                           self.path.name, MAX_AUDIO_BEFORE_VIDEO)
            self.file.open_without_video()

    def _finish(self) -> None:
        if self.file.has_video:
            for t in self.timeline.video_tail():
                self.file.repeat_video(t)
        self.file.close()
        self.kept = self.path.exists()
        self._measure()

    # --- figures -----------------------------------------------------------------------
    @property
    def duration(self) -> float:
        """Seconds of media in the file (both tracks end together)."""
        return round(self.timeline.end, 3)

    def stats(self) -> dict[str, Any]:
        return {
            "video_frames_in": self.received["video"],
            "audio_frames_in": self.received["audio"],
            "video_frames_dropped": self.dropped["video"],
            "audio_frames_dropped": self.dropped["audio"],
            "video_frames_without_stream": self.video_without_stream,
            "video_frames_written": self.file.video_frames,
            "queue_frames": self._queue.qsize(),
            "max_queue_frames": self.max_queued,
            "cpu_seconds": round(self.cpu_seconds, 3),
            "bytes": self.bytes_written,
            **self.timeline.stats(),
        }
