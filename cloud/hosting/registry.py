"""The pipeline registry: the one authority on which pipelines exist and their capability flags,
and on the plugins that failed to load (listed with their causes, never fatal)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from scope_relay.cloud.builtin_pipelines.signals import BUILTIN_PIPELINES
from scope_relay.cloud.hosting.discovery import Discovery, PluginFailure
from scope_relay.cloud.hosting.reload import ReloadResult
from scope_relay.cloud.pipelines.base import Pipeline
from scope_relay.protocol.capabilities import Capabilities, chain_capabilities
from scope_relay.protocol.errors import InvalidMessage, UnknownPipeline


class PipelineRegistry:
    def __init__(self, pipelines: Iterable[type[Pipeline]] = BUILTIN_PIPELINES,
                 failures: Iterable[PluginFailure] = ()):
        self._classes: dict[str, type[Pipeline]] = {}
        self.failures: list[PluginFailure] = list(failures)
        for cls in pipelines:
            self.register(cls)

    @classmethod
    def from_discovery(cls, discovery: Discovery) -> PipelineRegistry:
        """The validated classes :func:`discover_pipelines` found, and its failures."""
        return cls(discovery.pipelines, discovery.failures)

    def register(self, cls: type[Pipeline]) -> None:
        if cls.pipeline_id in self._classes:
            raise ValueError(f"pipeline {cls.pipeline_id!r} registered twice")
        self._classes[cls.pipeline_id] = cls

    def apply_reload(self, result: ReloadResult) -> None:
        """Take the classes a ``--reload`` check loaded (replacing those of the same id) and
        its failures (replacing the earlier ones of each source it read again)."""
        for pipeline_id, cls in result.classes.items():
            self._classes[pipeline_id] = cls
        for source, failures in result.failures.items():
            self.failures = [f for f in self.failures if f.source != source] + failures

    def describe_failures(self) -> list[dict[str, str]]:
        return [f.as_dict() for f in self.failures]

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
        return chain_capabilities(Capabilities(c.produces_video, c.produces_audio, c.accepts_video,
                                               c.accepts_audio)
                                  for c in self.resolve_chain(list(pipeline_ids)))

    def describe(self) -> list[dict[str, Any]]:
        return [cls.describe() for cls in self._classes.values()]

    def schemas(self) -> dict[str, Any]:
        return {pid: cls.describe() for pid, cls in self._classes.items()}
