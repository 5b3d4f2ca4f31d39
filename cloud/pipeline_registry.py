"""The pipeline registry: the one authority on which pipelines exist and their capability flags."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from scope_relay.protocol.capabilities import Capabilities, chain_capabilities
from scope_relay.protocol.errors import InvalidMessage, UnknownPipeline

from .pipelines.base import Pipeline
from .pipelines.builtin import BUILTIN_PIPELINES


class PipelineRegistry:
    def __init__(self, pipelines: Iterable[type[Pipeline]] = BUILTIN_PIPELINES):
        self._classes: dict[str, type[Pipeline]] = {}
        for cls in pipelines:
            self.register(cls)

    def register(self, cls: type[Pipeline]) -> None:
        if cls.pipeline_id in self._classes:
            raise ValueError(f"pipeline {cls.pipeline_id!r} registered twice")
        self._classes[cls.pipeline_id] = cls

    def ids(self) -> list[str]:
        return list(self._classes)

    def get(self, pipeline_id: str) -> type[Pipeline]:
        try:
            return self._classes[pipeline_id]
        except KeyError:
            raise UnknownPipeline(
                f"unknown pipeline {pipeline_id!r}; known: {', '.join(self._classes)}") from None

    def resolve_chain(self, pipeline_ids: Any) -> list[type[Pipeline]]:
        """Validate a ``pipeline_ids`` value from a request and return the classes."""
        if isinstance(pipeline_ids, str):
            pipeline_ids = [pipeline_ids]
        if (not isinstance(pipeline_ids, list) or not pipeline_ids
                or not all(isinstance(p, str) for p in pipeline_ids)):
            raise InvalidMessage("pipeline_ids must be a non-empty list of pipeline ids")
        return [self.get(p) for p in pipeline_ids]

    def capabilities(self, pipeline_ids: Sequence[str]) -> Capabilities:
        """The chain's flags (see :func:`chain_capabilities` for the rule)."""
        return chain_capabilities(Capabilities(c.produces_video, c.produces_audio, c.accepts_video)
                                  for c in self.resolve_chain(list(pipeline_ids)))

    def describe(self) -> list[dict[str, Any]]:
        return [cls.describe() for cls in self._classes.values()]

    def schemas(self) -> dict[str, Any]:
        return {pid: cls.describe() for pid, cls in self._classes.items()}
