"""Prometheus names both servers expose: one gauge per numeric figure of ``/api/v1/stats``,
labelled by session, so every counted drop is on ``/metrics`` without a second list of names
to keep in step with the stats."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from prometheus_client.core import GaugeMetricFamily


def session_gauges(prefix: str, sessions: Iterable[tuple[str, Mapping[str, Any]]]
                   ) -> Iterator[GaugeMetricFamily]:
    """``{prefix}_{figure}{session="..."}`` for every int/float figure (bools and text left out)."""
    families: dict[str, GaugeMetricFamily] = {}
    for session_id, stats in sessions:
        for key, value in stats.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            family = families.get(key)
            if family is None:
                family = families[key] = GaugeMetricFamily(
                    f"{prefix}_{key}", f"per-session '{key}' of /api/v1/stats", labels=["session"])
            family.add_metric([session_id], float(value))
    yield from families.values()
