"""Prometheus names both servers expose: one gauge per numeric figure of ``/api/v1/stats``,
labelled by session, so every counted drop is on ``/metrics`` without a second list of names
to keep in step with the stats."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric


def session_gauges(prefix: str, sessions: Iterable[tuple[str, Mapping[str, Any]]]
                   ) -> Iterator[GaugeMetricFamily]:
    """``{prefix}_{figure}{session="..."}`` for every int/float figure (bools and text left
    out); nested figures are named by their path (``receive_audio_lost``)."""
    families: dict[str, GaugeMetricFamily] = {}
    for session_id, stats in sessions:
        for key, value in _flattened(stats):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            family = families.get(key)
            if family is None:
                family = families[key] = GaugeMetricFamily(
                    f"{prefix}_{key}", f"per-session '{key}' of /api/v1/stats", labels=["session"])
            family.add_metric([session_id], float(value))
    yield from families.values()


def _flattened(stats: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in stats.items():
        if isinstance(value, Mapping):
            yield from _flattened(value, f"{prefix}{key}_")
        else:
            yield f"{prefix}{key}", value


class _Collector:
    """Adapts a plain generator function to prometheus_client's collector interface."""

    def __init__(self, collect: Callable[[], Iterable[Metric]]):
        self._collect = collect

    def collect(self) -> Iterable[Metric]:
        return self._collect()


def metrics_handler(collect: Callable[[], Iterable[Metric]]
                    ) -> Callable[[web.Request], Awaitable[web.Response]]:
    """A ``GET /metrics`` handler exposing what ``collect()`` yields, in the text format."""
    registry = CollectorRegistry(auto_describe=True)
    registry.register(_Collector(collect))

    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(registry), content_type="text/plain",
                            charset="utf-8")

    return handler
