"""PipelineManager: which chain is loaded, loading it off the event loop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from scope_relay.util.tasks import OwnedTasks

from .pipeline_registry import PipelineRegistry
from .pipelines.base import Pipeline

logger = logging.getLogger(__name__)


@dataclass
class LoadState:
    status: str = "not_loaded"  # not_loaded | loading | loaded | error
    pipeline_ids: list[str] = field(default_factory=list)
    error: str | None = None


class PipelineManager:
    """Which chain is loaded. Loading runs in a worker thread (real models take minutes)."""

    def __init__(self, registry: PipelineRegistry, device: str = "cpu"):
        self.registry = registry
        self.device = device
        self.state = LoadState()
        self._lock = asyncio.Lock()
        self._tasks = OwnedTasks()

    async def load(self, pipeline_ids: Any, load_params: dict[str, Any] | None = None) -> LoadState:
        """Load a chain. The load itself runs on as a task of the manager's: a caller that
        gives up (timeout, closed socket) never leaves the state stuck at ``loading``."""
        classes = self.registry.resolve_chain(pipeline_ids)
        return await asyncio.shield(self._tasks.spawn(self._load(classes)))

    async def _load(self, classes: list[type[Pipeline]]) -> LoadState:
        ids = [c.pipeline_id for c in classes]
        async with self._lock:
            if self.state.status == "loaded" and self.state.pipeline_ids == ids:
                return self.state
            self.state = LoadState("loading", ids)
            try:
                # Instantiating once warms up whatever the pipeline needs (weights, kernels).
                await asyncio.to_thread(lambda: [c(self.device) for c in classes])
            except BaseException as exc:  # a pipeline's own failure: report, don't crash
                self.state = LoadState("error", ids, f"{type(exc).__name__}: {exc}")
                if not isinstance(exc, Exception):
                    raise  # the app is shutting down
                logger.exception("loading %s failed", ids)
                return self.state
            self.state = LoadState("loaded", ids)
            logger.info("loaded pipeline chain %s", ids)
            return self.state

    async def close(self) -> None:
        await self._tasks.cancel_all()

    def status(self) -> dict[str, Any]:
        state = self.state
        out: dict[str, Any] = {"status": state.status, "pipeline_ids": state.pipeline_ids,
                               "pipeline_id": state.pipeline_ids[-1] if state.pipeline_ids else None}
        if state.pipeline_ids:
            out.update(self.registry.capabilities(state.pipeline_ids).as_dict())
        else:
            out.update(produces_video=False, produces_audio=False, accepts_video=False)
        if state.error:
            out["error"] = state.error
        return out

    def instantiate(self, pipeline_ids: Sequence[str]) -> list[Pipeline]:
        return [cls(self.device) for cls in self.registry.resolve_chain(list(pipeline_ids))]
