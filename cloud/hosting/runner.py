"""PipelineRunner: runs a chain in a worker thread and stamps its output on the media clock.

Never on the event loop. It generates only when the buffer needs more (so fast pipelines
don't race ahead and parameter changes apply within a chunk), starts each call early
enough for slow ones (it learns how long calls take), and waits rather than spins when a
pipeline returns nothing.

A pipeline that raises (or returns something unusable) ends generation for its session:
retrying a broken model would only fill the log, and the client must hear why its media
stopped. The runner logs the traceback, keeps the reason in :attr:`PipelineRunner.failed`
and hands it to ``on_failure``; other sessions' runners never notice.
"""

from __future__ import annotations

import atexit
import collections
import contextvars
import logging
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import av
import numpy as np
import torch

from scope_relay.cloud.hosting.modulation import ModulatedParams
from scope_relay.cloud.hosting.session_tempo import SessionTempo, TempoCounts
from scope_relay.cloud.pipelines.base import InputFrame, Pipeline, PipelineInputs, PipelineOutput
from scope_relay.cloud.pipelines.outputs import as_pipeline_output, pipeline_name
from scope_relay.cloud.sessions.audio_input import AudioInputQueue
from scope_relay.cloud.sessions.media_buffer import MediaBuffer
from scope_relay.media.audio import as_channels_first
from scope_relay.media.resample import TimedResampler
from scope_relay.protocol.media import SAMPLE_RATE
from scope_relay.protocol.parameters import (
    MODULATE,
    PAUSED,
    SESSION_CONTROLS,
    TEMPO,
    coerce_parameter,
    finite_number,
    is_paused,
)

logger = logging.getLogger(__name__)
#: parameters a session may hold; unknown keys beyond this are refused (counted)
MAX_PARAMETER_KEYS = 256
#: Audio that resumes after a longer pause restarts its stream instead of being preceded
#: by that much generated silence.
AUDIO_RESTART_GAP = 1.0
#: a failure's text is cut to this many characters (an exception may carry megabytes,
#: and the reason travels in a control message, in stats and to the page)
MAX_FAILURE_CHARS = 2000
#: call time and headroom are reported over this many of the latest calls
CALL_WINDOW = 50
_live_runners: weakref.WeakSet[PipelineRunner] = weakref.WeakSet()


@atexit.register
def _stop_live_runners() -> None:
    """A worker thread inside torch at interpreter exit aborts the process: join them all."""
    for runner in list(_live_runners):
        runner.stop(timeout=2.0)


@dataclass(slots=True)
class RunnerCounts(TempoCounts):
    """What one session's chain was asked to do and refused (and its beat's figures)."""

    pipeline_calls: int = 0  # chain calls made so far (none while paused)
    pipeline_errors: int = 0
    rejected_parameters: int = 0  # values of an unknown key or the wrong type

class InputQueue:
    """Bounded, thread-safe queue of camera frames (drops oldest, counted)."""

    def __init__(self, max_frames: int = 8, cond: threading.Condition | None = None):
        self._frames: collections.deque[InputFrame] = collections.deque()
        self._max = max_frames
        self._cond = cond or threading.Condition()  # shared with the audio input's
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._frames)

    def put(self, frame: InputFrame) -> None:
        with self._cond:
            if len(self._frames) >= self._max:
                self._frames.popleft()
                self.dropped += 1
            self._frames.append(frame)
            self._cond.notify()

    def take_all(self, timeout: float) -> list[InputFrame]:
        with self._cond:
            if not self._frames:
                self._cond.wait(timeout)
            frames = list(self._frames)
            self._frames.clear()
            return frames

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()


#: what :attr:`PipelineOutput.video_format` may say
VIDEO_FORMATS = ("rgb24", "yuv420p")


def video_to_numpy(video: Any, video_format: str = "rgb24") -> list[np.ndarray]:
    """``(T, H, W, 3)`` uint8 or float [0, 1] (torch or numpy) -> list of uint8 frames;
    for ``yuv420p``, ``(T, H * 3 // 2, W)`` uint8 -> list of 2-D I420 frames."""
    if video_format == "yuv420p":
        return _yuv_to_numpy(video)
    if video_format != "rgb24":
        raise ValueError(f"video_format must be one of {', '.join(VIDEO_FORMATS)}, "
                         f"got {video_format!r}")
    if isinstance(video, torch.Tensor):
        if video.is_floating_point():
            video = (video.clamp(0, 1) * 255).round().to(torch.uint8)
        video = video.detach().cpu().numpy()
    arr = np.asarray(video)
    if arr.ndim == 3:
        arr = arr[np.newaxis]
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(f"video must be (T, H, W, 3), got shape {arr.shape}")
    if arr.dtype != np.uint8:
        if arr.dtype.kind != "f":
            raise ValueError(f"video must be uint8 or float in [0, 1], got {arr.dtype}")
        arr = (np.clip(np.nan_to_num(arr), 0, 1) * 255).round().astype(np.uint8)
    return [np.ascontiguousarray(f) for f in arr]


def _yuv_to_numpy(video: Any) -> list[np.ndarray]:
    if isinstance(video, torch.Tensor):
        video = video.detach().cpu().numpy()
    arr = np.asarray(video)
    if arr.ndim == 2:
        arr = arr[np.newaxis]
    if (arr.ndim != 3 or arr.dtype != np.uint8 or arr.shape[1] % 3 or arr.shape[2] % 2
            or arr.shape[1] // 3 % 2 or not arr.shape[2]):
        raise ValueError("yuv420p video must be (T, H * 3 / 2, W) uint8 with H and W even, "
                         f"got shape {arr.shape} {arr.dtype}")
    return [np.ascontiguousarray(f) for f in arr]


def yuv_to_rgb(frame: np.ndarray) -> np.ndarray:
    """One 2-D I420 frame as ``(H, W, 3)`` RGB (for a stage that feeds another)."""
    return np.asarray(av.VideoFrame.from_ndarray(frame, format="yuv420p").to_ndarray(
        format="rgb24"))


def audio_to_numpy(audio: Any) -> np.ndarray:
    if isinstance(audio, torch.Tensor):
        audio = audio.detach().cpu().numpy()
    return as_channels_first(audio)


#: ``on_failure(pipeline_id, reason)``, called once from the worker thread
FailureCallback = Callable[[str, str], None]


@dataclass(frozen=True, slots=True)
class Refusal:
    """A parameter value the runner did not apply, and why (told to whoever sent it)."""

    name: str
    value: Any
    reason: str


class PipelineRunner:
    def __init__(self, chain: Sequence[Pipeline], buffer: MediaBuffer, *,
                 params: Mapping[str, Any] | None = None, min_lead: float = 0.12,
                 on_failure: FailureCallback | None = None):
        self.chain = list(chain)
        self.buffer = buffer
        self._input_cond = threading.Condition()  # either input arriving wakes the worker
        self.inputs = InputQueue(cond=self._input_cond) if self.chain[0].accepts_video else None
        #: the microphone's audio when the first stage accepts audio (cloud/sessions/audio_input.py)
        self.audio_inputs = (AudioInputQueue(cond=self._input_cond)
                             if self.chain[0].accepts_audio else None)
        self.params: dict[str, Any] = {}
        for p in self.chain:
            self.params.update(p.default_params())
        #: keys a value was accepted for (the bound on unknown keys counts these)
        self._keys: set[str] = set(self.params)
        self._pending: dict[str, Any] = {}
        self._pending_lock = threading.Lock()
        self.min_lead = min_lead
        self._stop = threading.Event()
        self._wake = threading.Event()
        # in a copy of the creating context: its lines go to the connection that made the
        # session (cloud/control/tenancy.py), as they would from a task
        self._thread = threading.Thread(target=contextvars.copy_context().run, args=(self._run,),
                                        name="pipeline-runner", daemon=True)
        self._resampler = TimedResampler()
        self._chunk_start = 0.0  # media seconds where the next chunk starts
        self._audio_end = 0.0  # media seconds the audio written so far reaches (at input rate)
        self._call_seconds = 0.0
        #: (seconds the chain's call took, media seconds it produced) of the latest calls
        self._calls: collections.deque[tuple[float, float]] = collections.deque(maxlen=CALL_WINDOW)
        self._calls_lock = threading.Lock()
        self.counts = RunnerCounts()
        self.last_error: str | None = None
        #: ``"<ExceptionType>: <message>"`` once a call raised; generation has then ended
        self.failed: str | None = None
        #: the id of the pipeline that raised (the last one for unusable output)
        self.failed_pipeline: str | None = None
        self._on_failure = on_failure
        self._culprit = pipeline_name(self.chain[-1])  # whose code runs now (worker only)
        #: what the offer's own values had refused (nobody to tell yet: logged and counted)
        self.initial_refusals = self._checked(params or {}, self._pending)
        #: the relay's beat grid and the updates held for a boundary (session_tempo.py)
        self.tempo = SessionTempo(self.counts)
        if TEMPO in self._pending:
            self.tempo.receive(self._pending.pop(TEMPO))
        if MODULATE in self._pending:
            self.tempo.receive_modulations(self._pending.pop(MODULATE))
        #: numeric parameters' (minimum, maximum, integer), the bounds of a modulation
        self._numeric = {name: (spec.minimum, spec.maximum, spec.kind == "integer")
                         for p in self.chain for name, spec in p.params.items()
                         if spec.kind in ("number", "integer")}

    # --- control (any thread) ----------------------------------------------------------
    def start(self) -> None:
        """Start the worker (at most once: a second call does nothing)."""
        if self._thread.ident is not None:
            return
        _live_runners.add(self)
        with self._pending_lock:
            starts_paused = is_paused({**self.params, **self._pending})
        if starts_paused:  # an offer that starts paused
            self.buffer.hold()
        self._thread.start()

    def update_params(self, updates: Mapping[str, Any]) -> list[Refusal]:
        """Checked now, applied at the next chunk boundary, never mid-chunk; returns the
        values refused (the sender is told at once, not a chunk later). A pause or resume
        holds or frees the media clock at once (what was already made waits, it does not
        play on for the length of a chunk); the relay's beat (``tempo``, ``modulate``) is
        taken at once, and a quantized change is held for its boundary. Call it from one
        thread (the event loop)."""
        if TEMPO in updates or MODULATE in updates:  # the beat, not parameters
            updates = dict(updates)
            if TEMPO in updates:
                self.tempo.receive(updates.pop(TEMPO))
            if MODULATE in updates:
                self.tempo.receive_modulations(updates.pop(MODULATE))
        accepted: dict[str, Any] = {}
        refusals = self._checked(updates, accepted)
        if PAUSED in accepted:
            (self.buffer.hold if accepted[PAUSED] else self.buffer.resume)()
        accepted = self.tempo.hold(accepted, self.buffer)  # quantized: kept for a boundary
        with self._pending_lock:
            self._pending.update(accepted)
        self._wake.set()
        return refusals

    def _checked(self, updates: Mapping[str, Any], into: dict[str, Any]) -> list[Refusal]:
        """Each value coerced by its schema into ``into``; the rest refused (counted)."""
        refusals = []
        for key, value in updates.items():
            control = SESSION_CONTROLS.get(key)
            spec = None if control is not None else next(
                (p.params[key] for p in self.chain if key in p.params), None)
            try:
                if control is not None:  # a reserved session control (``paused``)
                    into[key] = coerce_parameter(key, value, control)
                elif spec is not None:
                    into[key] = spec.coerce(key, value)
                elif key in self._keys or len(self._keys) < MAX_PARAMETER_KEYS:
                    into[key] = value  # unknown keys are kept (Scope sends its own), bounded
                else:
                    raise ValueError(f"{key}: unknown parameter, and this session already "
                                     f"holds {MAX_PARAMETER_KEYS}")
            except Exception as exc:  # nothing a client sends may end the session
                # (DEBUG: the sender is told, parameter_refused; a flood of bad values
                # must not flood the log, which is forwarded to the relay's terminal too)
                self.counts.rejected_parameters += 1
                logger.debug("ignored parameter update: %s", exc)
                refusals.append(Refusal(key, value, str(exc)))
                continue
            self._keys.add(key)
        return refusals

    def request_stop(self) -> None:
        """Tell the worker to finish (never blocks; safe from the event loop)."""
        self._stop.set()
        self._wake.set()
        if self.inputs is not None:
            self.inputs.wake()
        if self.audio_inputs is not None:
            self.audio_inputs.wake()
        for p in self.chain:
            close = getattr(p, "close", None)
            if close:
                close()

    @property
    def paused(self) -> bool:
        """The session is paused (``paused``): no calls, and the buffer's clock holds."""
        return self.buffer.holding

    @property
    def running(self) -> bool:
        """Whether the worker thread is alive."""
        return self._thread.is_alive()

    @property
    def resampler_rebuilds(self) -> int:
        """How often the output audio's rate changed (each change rebuilds the filter)."""
        return self._resampler.resampler.rebuilds

    @property
    def nonfinite_samples(self) -> int:
        """NaN/inf audio samples the pipeline produced (replaced by silence)."""
        return self._resampler.resampler.nonfinite_samples

    def stop(self, timeout: float = 5.0) -> None:
        self.request_stop()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        _live_runners.discard(self)

    # --- worker ------------------------------------------------------------------------
    def _apply_pending(self) -> None:
        """Checked values (:meth:`update_params`) take effect: at a chunk boundary only."""
        with self._pending_lock:
            pending, self._pending = self._pending, {}
        self.params.update(pending)

    def _target_lead(self) -> float:
        return self.min_lead + 1.25 * self._call_seconds

    def _learn_call_time(self, elapsed: float) -> None:
        """Rise at once to a slower call, forget slowly: starting a call too late is an
        audible gap, starting it early only buffers a little more."""
        self._call_seconds = max(elapsed, 0.9 * self._call_seconds + 0.1 * elapsed)

    def _run(self) -> None:
        # inference_mode, not no_grad: no version counters or autograd records at all
        with torch.inference_mode():
            while not self._stop.is_set():
                wait = self.buffer.lead() - self._target_lead()
                if wait > 0:
                    self._wake.wait(min(wait, 0.5))
                    self._wake.clear()
                    continue
                self._apply_pending()
                if self.paused:  # (held when the update came: update_params)
                    self._wake.wait(0.1)
                    self._wake.clear()
                    continue
                inputs = None
                if self.inputs is not None or self.audio_inputs is not None:
                    inputs = self._take_inputs(timeout=0.1)
                    if inputs is None:
                        continue
                began = time.monotonic()
                try:
                    pushed = self.step(inputs)
                except Exception as exc:
                    self._fail(exc)
                    return
                self._learn_call_time(time.monotonic() - began)
                if not pushed:
                    self._stop.wait(0.02)  # idle pipelines wait, never spin

    def _take_inputs(self, timeout: float) -> PipelineInputs | None:
        """The camera frames and input audio since the last call, waiting up to
        ``timeout`` s for either; ``None`` when nothing came."""
        video, audio = self.inputs, self.audio_inputs
        with self._input_cond:
            if not ((video is not None and len(video)) or (audio is not None and len(audio))):
                self._input_cond.wait(timeout)
            frames = video.take_all(timeout=0.0) if video is not None else []
            chunks = audio.take_all() if audio is not None else []
        if not frames and not chunks:
            return None
        return PipelineInputs(frames, chunks)

    def _fail(self, exc: Exception) -> None:
        """End generation: log the traceback, keep the reason, tell the owner."""
        if self._stop.is_set():  # interrupted by a stop (close() on a model): no failure
            logger.info("pipeline %s ended while stopping: %s: %s", self._culprit,
                        type(exc).__name__, exc)
            return
        self.counts.pipeline_errors += 1
        reason = f"{type(exc).__name__}: {exc}"
        if len(reason) > MAX_FAILURE_CHARS:
            reason = reason[:MAX_FAILURE_CHARS - 1] + "…"
        self.failed = self.last_error = reason
        self.failed_pipeline = self._culprit
        logger.exception("pipeline %s failed; generation for this session stopped",
                         self._culprit)
        if self._on_failure is not None:
            try:
                self._on_failure(self._culprit, self.failed)
            except Exception:  # the owner's bug must not hide the pipeline's
                logger.exception("reporting the failure of pipeline %s failed", self._culprit)

    def step(self, inputs: list[InputFrame] | None = None) -> bool:
        """One chunk: apply pending parameter updates, call the chain once, and push its
        output stamped on the media clock. Returns whether a chunk was pushed.

        The worker thread runs this in a loop, paced by the buffer's lead; tests and tools
        may drive it directly (without :meth:`start`).
        """
        self._apply_pending()
        timed = self._with_tempo(inputs)
        values = ModulatedParams(self.params, self.tempo.modulations, timed.tempo,
                                 self._numeric)
        timed.parameters = values.value
        began = time.monotonic()
        output = self._call_chain(timed, values.at(timed.media_time))
        called = time.monotonic() - began
        if output is None:
            return False
        media_seconds = self._emit(output)
        with self._calls_lock:
            self._calls.append((called, media_seconds))
        return True

    def call_figures(self) -> dict[str, Any]:
        """The chain's call time (mean and 95th percentile, ms) and its headroom (media
        seconds produced per second spent calling: 3.2 means it could run 3.2x faster than
        real time; below 1 it cannot keep up) over the latest :data:`CALL_WINDOW` calls that
        produced media. ``None`` before the first."""
        with self._calls_lock:
            calls = list(self._calls)
        if not calls:
            return {"call_ms_mean": None, "call_ms_p95": None, "headroom": None,
                    "calls_measured": 0}
        seconds = np.array([c for c, _ in calls])
        called = float(seconds.sum())
        media = sum(m for _, m in calls)
        return {"call_ms_mean": round(float(seconds.mean()) * 1000, 2),
                "call_ms_p95": round(float(np.percentile(seconds, 95)) * 1000, 2),
                "headroom": round(media / called, 2) if called > 0 else None,
                "calls_measured": len(calls)}

    def _with_tempo(self, inputs: list[InputFrame] | None) -> PipelineInputs:
        """The call's inputs with the chunk's media time and the beat grid on the media
        clock; updates held for a boundary this chunk reaches are applied first."""
        start = max(self._chunk_start, 0.0)
        grid = self.tempo.media_grid(self.buffer, start)
        due = self.tempo.due(grid, start, 1.0 / (self.chain[-1].fps or 30.0))
        if due:
            with self._pending_lock:
                self._pending = {**due, **self._pending}
            self._apply_pending()
        audio = inputs.audio if isinstance(inputs, PipelineInputs) else ()
        return PipelineInputs(inputs or (), audio, media_time=start, tempo=grid)

    def _call_chain(self, inputs: PipelineInputs,
                    params: Mapping[str, Any]) -> PipelineOutput | None:
        audio_out: PipelineOutput | None = None
        output: PipelineOutput | None = None
        stage_inputs = inputs
        self.counts.pipeline_calls += 1
        for stage in self.chain:
            self._culprit = pipeline_name(stage)
            output = as_pipeline_output(stage(stage_inputs, params), stage)
            if output is None:
                return None
            if output.audio is not None:
                audio_out = output
            if output.video is not None and stage is not self.chain[-1]:  # (the last: _emit)
                frames = video_to_numpy(output.video, output.video_format)
                if output.video_format == "yuv420p":
                    frames = [yuv_to_rgb(f) for f in frames]  # the next stage takes RGB
                times = output.video_times or [0.0] * len(frames)
                stage_inputs = PipelineInputs(
                    [InputFrame(f, t) for f, t in zip(frames, times, strict=False)],
                    media_time=inputs.media_time, tempo=inputs.tempo,
                    parameters=inputs.parameters)
        if output is not None and audio_out is not None and audio_out is not output:
            output.audio, output.sample_rate = audio_out.audio, audio_out.sample_rate
        return output

    def _emit(self, out: PipelineOutput) -> float:
        """Stamp a chunk on the media clock and hand it to the buffer; returns how many
        media seconds it holds."""
        start = max(self._chunk_start, 0.0)
        video: list[tuple[float, np.ndarray]] = []
        frame_seconds = 0.0
        duration = 0.0
        last = self.chain[-1]
        self._culprit = pipeline_name(last)  # what cannot be used is the last stage's output
        # (checked even when the last stage does not declare video: a bug either way)
        frames = None if out.video is None else video_to_numpy(out.video, out.video_format)
        if frames is not None and last.produces_video:
            fps = out.fps or last.fps or 30.0
            if finite_number(fps) is None or fps <= 0:
                raise ValueError(f"fps must be a positive finite number, got {fps!r}")
            frame_seconds = 1.0 / fps
            if out.video_times is not None:
                times = np.asarray(out.video_times, dtype=np.float64)
                if times.shape != (len(frames),) or not np.isfinite(times).all():
                    raise ValueError("video_times must be one finite time per frame")
                video = list(zip(times.tolist(), frames, strict=True))
                start = video[0][0] if video else start
                duration = max(0.0, video[-1][0] + frame_seconds - start) if video else 0.0
            else:
                video = [(start + k * frame_seconds, f) for k, f in enumerate(frames)]
                duration = len(frames) * frame_seconds
        audio48 = None
        if out.audio is not None:
            rate = int(out.sample_rate or self._audio_rate())
            audio = audio_to_numpy(out.audio)
            gap = start - self._audio_end
            # first audio, or audio again after a long pause: the stream starts here
            restart = gap > AUDIO_RESTART_GAP or not self._resampler.anchored
            if restart:
                self._audio_end = start
            elif gap * rate >= 1:  # keep audio on the same clock: silence fills the gap
                audio = np.concatenate(
                    [np.zeros((audio.shape[0], int(round(gap * rate))), np.float32), audio], axis=1)
            audio48, audio_start = self._resampler.process(
                audio, rate, round(start * SAMPLE_RATE) if restart else None, restart=restart)
            audio_seconds = audio.shape[1] / rate
            self._audio_end = self._audio_end + audio_seconds
            duration = max(duration, self._audio_end - start)
        else:
            audio_start = None
        self._chunk_start = start + duration
        self.buffer.push(video, audio48, frame_seconds, audio_start)
        return duration

    def _audio_rate(self) -> int:
        for stage in reversed(self.chain):
            if stage.sample_rate:
                return stage.sample_rate
        return SAMPLE_RATE
