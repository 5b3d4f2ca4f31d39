"""PipelineManager: which chain is loaded, loading it off the event loop (with progress)."""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from scope_relay.cloud.hosting.registry import PipelineRegistry
from scope_relay.cloud.hosting.reload import PluginReloader, ReloadResult
from scope_relay.cloud.pipelines.base import LoadProgress, Pipeline
from scope_relay.util.tasks import OwnedTasks

logger = logging.getLogger(__name__)


def resolve_device(spec: str | None) -> str:
    """``auto`` (CUDA when torch sees it, else CPU), ``cpu``, ``cuda`` or ``cuda:N`` as a torch
    device string; ``ValueError`` with a one-line reason for one this machine lacks."""
    import torch

    text = (spec or "auto").strip().lower()
    if text == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if text == "cpu":
        return "cpu"
    if text != "cuda" and not text.startswith("cuda:"):
        raise ValueError(f"--device must be auto, cpu, cuda or cuda:N, got {spec!r}")
    index_text = text.partition(":")[2] or "0"
    if not index_text.isdigit():
        raise ValueError(f"--device {spec}: N in cuda:N must be a device number")
    if not torch.cuda.is_available():
        raise ValueError(f"--device {spec}: CUDA is not available here (torch {torch.__version__}); "
                         "use --device cpu or auto")
    count = torch.cuda.device_count()
    if int(index_text) >= count:
        raise ValueError(f"--device {spec}: this machine has {count} CUDA device(s), "
                         f"cuda:0 to cuda:{count - 1}")
    return text


def _no_progress(phase: str, fraction: float | None) -> None:
    pass


class LoadProgressRecorder:
    """Progress of one chain load. Pipelines report from the worker thread, the status API
    reads on the loop: every access holds the lock. A chain of N pipelines reports pipeline
    i's fraction f as (i + f) / N, its phase prefixed with the pipeline's id."""

    def __init__(self, count: int):
        self._lock = threading.Lock()
        self._count = max(1, count)
        self._started = time.monotonic()
        self._phase = "starting"
        self._fraction: float | None = None

    def for_stage(self, index: int, pipeline_id: str) -> LoadProgress:
        def report(phase: str, fraction: float | None = None) -> None:
            value = _fraction(fraction)
            with self._lock:
                self._phase = str(phase) if self._count == 1 else f"{pipeline_id}: {phase}"
                self._fraction = None if value is None else (index + value) / self._count
        return report

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {"phase": self._phase, "fraction": self._fraction,
                    "elapsed": round(time.monotonic() - self._started, 3)}


def _fraction(value: Any) -> float | None:
    """A reported fraction clamped to 0..1; anything but a finite number is "unknown"."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return min(1.0, max(0.0, float(value)))


@dataclass
class LoadState:
    status: str = "not_loaded"  # not_loaded | loading | loaded | error
    pipeline_ids: list[str] = field(default_factory=list)
    error: str | None = None
    #: the classes loaded: a chain whose code ``--reload`` replaced is loaded again
    classes: tuple[type[Pipeline], ...] = ()
    progress: LoadProgressRecorder | None = None


class PipelineManager:
    """Which chain is loaded. Loading runs in a worker thread (real models take minutes)."""

    def __init__(self, registry: PipelineRegistry, device: str = "cpu",
                 reloader: PluginReloader | None = None):
        self.registry = registry
        self.device = device
        self.reloader = reloader
        self.state = LoadState()
        self._lock = asyncio.Lock()
        self._reload_lock = asyncio.Lock()
        self._tasks = OwnedTasks()
        #: called with each ``--reload`` check's result (the app tells sessions of failures)
        self.on_reload: Callable[[ReloadResult], object] | None = None

    async def refresh(self) -> None:
        """With ``--reload``: load edited plugin sources again (in a worker thread: imports
        may be slow) and register their new classes."""
        if self.reloader is None:
            return
        async with self._reload_lock:
            result = await asyncio.to_thread(self.reloader.check)
            self.registry.apply_reload(result)
        if self.on_reload is not None and (result.classes or result.failures):
            self.on_reload(result)

    async def load(self, pipeline_ids: Any, load_params: dict[str, Any] | None = None) -> LoadState:
        """Load a chain. The load itself runs on as a task of the manager's: a caller that
        gives up (timeout, closed socket) never leaves the state stuck at ``loading``."""
        await self.refresh()
        classes = self.registry.resolve_chain(pipeline_ids)
        return await asyncio.shield(self._tasks.spawn(self._load(classes)))

    async def _load(self, classes: list[type[Pipeline]]) -> LoadState:
        ids = [c.pipeline_id for c in classes]
        async with self._lock:
            if self.state.status == "loaded" and self.state.classes == tuple(classes):
                return self.state
            progress = LoadProgressRecorder(len(classes))
            self.state = LoadState("loading", ids, classes=tuple(classes), progress=progress)
            try:
                # Instantiating and loading once warms up whatever the pipeline needs
                # (weights, kernels), reporting progress as it goes.
                await asyncio.to_thread(self._build, classes, progress)
            except BaseException as exc:  # a pipeline's own failure: report, don't crash
                self.state = LoadState("error", ids, f"{type(exc).__name__}: {exc}")
                if not isinstance(exc, Exception):
                    raise  # the app is shutting down
                logger.exception("loading %s failed", ids)
                return self.state
            self.state = LoadState("loaded", ids, classes=tuple(classes))
            logger.info("loaded pipeline chain %s on %s", ids, self.device)
            return self.state

    def _build(self, classes: Sequence[type[Pipeline]],
               progress: LoadProgressRecorder | None = None) -> list[Pipeline]:
        """Construct each pipeline and run its load hook (in a worker thread)."""
        chain = []
        for index, cls in enumerate(classes):
            pipeline = cls(self.device)
            pipeline.load(progress.for_stage(index, cls.pipeline_id) if progress else _no_progress)
            chain.append(pipeline)
        return chain

    async def close(self) -> None:
        await self._tasks.cancel_all()

    def status(self) -> dict[str, Any]:
        state = self.state
        out: dict[str, Any] = {"status": state.status, "pipeline_ids": state.pipeline_ids,
                               "pipeline_id": state.pipeline_ids[-1] if state.pipeline_ids else None,
                               "device": self.device}
        if state.pipeline_ids:
            out.update(self.registry.capabilities(state.pipeline_ids).as_dict())
            if state.pipeline_ids[-1] in self.registry.ids():  # the frame rate it declares
                out["fps"] = self.registry.get(state.pipeline_ids[-1]).fps
        else:
            out.update(produces_video=False, produces_audio=False, accepts_video=False,
                       accepts_audio=False)
        if state.status == "loading" and state.progress is not None:
            out["progress"] = state.progress.snapshot()
        if state.error:
            out["error"] = state.error
        return out

    def instantiate(self, pipeline_ids: Sequence[str]) -> list[Pipeline]:
        """A session's own chain: constructed and loaded (blocking: call it off the loop)."""
        return self._build(self.registry.resolve_chain(list(pipeline_ids)))
