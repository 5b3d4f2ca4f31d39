"""Recorder: one recording of exactly what a session sends to the browser.

The output tracks hand each outgoing frame to the recorder's taps on the event loop; a
tap only puts it on a bounded queue (full: the frame is dropped and counted, never
waited for), so recording cannot hold up live playback. One worker thread owns the rest:
it places each frame on the file's timeline by its pts (``recording_timeline``: the live
A/V alignment, gaps filled, never backwards) and encodes and muxes it with PyAV
(``recording_file``). PyAV releases the GIL while it encodes.

A frame dropped at the queue becomes a held frame or silence in the file, like any other
gap, so the file's timing is not disturbed by drops, only its content.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import av

from scope_relay.local.recording.mp4_file import RecordingFile
from scope_relay.local.recording.timeline import RecordingTimeline
from scope_relay.media.audio import frame_to_s16

logger = logging.getLogger(__name__)

#: Frames waiting for the worker: about 3 s of 30 fps video with its 20 ms audio frames.
MAX_QUEUE = 256
#: Audio held while waiting for the first picture; past this the file is audio only.
MAX_AUDIO_BEFORE_VIDEO = 10.0

_STOP = object()


class Recorder:
    """Taps for the output tracks, a bounded queue, and the worker thread writing the file."""

    def __init__(self, path: Path, *, video: bool, audio: bool,
                 output_delay: Callable[[], float] = lambda: 0.0, max_queue: int = MAX_QUEUE):
        """``output_delay``: how long after its pts the relay sends a frame now, less a
        constant (its rises are the pauses of the output: ``recording_timeline``)."""
        self.path = path
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
                if self.error is None and not self._aborted:
                    self._guarded(self._write, *item)
            if self._aborted or self.error is not None:
                self.file.abort()
            else:
                self._guarded(self._finish)
                if self.error is not None:
                    self.file.abort()
        finally:
            self.cpu_seconds = time.thread_time() - started
            self._done.set_result(None)

    def _guarded(self, action: Any, *args: Any) -> None:
        try:
            action(*args)
        except Exception as exc:  # the recording fails, live playback goes on
            logger.exception("recording %s failed", self.path.name)
            self.error = f"{type(exc).__name__}: {exc}"

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
            **self.timeline.stats(),
        }
