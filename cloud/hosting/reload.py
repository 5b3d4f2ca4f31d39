"""``--reload``: notice edited plugin source files and load their new code.

Checked (not watched by a thread) when a chain loads and when a session starts, so the new
code is used from the next session on, and polled (a stat per file a second, on the loop)
while the app runs: a file whose new code does not import or validate keeps the old
classes, the cause is logged and kept as a failure until the file loads again, and the
sessions running its pipelines are told (``pipeline_reload_failed``) at once, rather than
playing on the old code in silence. The built-ins are never reloaded.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import ModuleType

from scope_relay.cloud.hosting.discovery import (
    PluginFailure,
    PluginOrigin,
    classes_from,
    describe_error,
    load_source,
    source_file,
    validate_pipeline,
)
from scope_relay.cloud.pipelines.base import Pipeline

logger = logging.getLogger(__name__)

Stamp = tuple[int, int] | None  # (mtime_ns, size); None: the file is gone


def _stamp(path: str) -> Stamp:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


@dataclass
class _Watch:
    origin: PluginOrigin
    path: str
    stamp: Stamp


@dataclass
class ReloadResult:
    """What one check found: new classes by id, and each re-read source's failures (an
    empty list clears that source's earlier failures)."""

    classes: dict[str, type[Pipeline]] = field(default_factory=dict)
    failures: dict[str, list[PluginFailure]] = field(default_factory=dict)


class PluginReloader:
    """Remembers each plugin's source file and its stamp; :meth:`check` loads changed ones."""

    def __init__(self, origins: Mapping[str, PluginOrigin], unloaded: Iterable[PluginOrigin] = ()):
        """Watch the plugins in ``origins`` (pipeline_id -> origin) and those ``unloaded``
        (which gave no pipeline: once fixed, their pipelines are added)."""
        #: pipeline_id -> origin, as registered (kept up to date as classes are replaced)
        self._owners = dict(origins)
        self._watches: list[_Watch] = []
        for origin in dict.fromkeys([*origins.values(), *unloaded]):
            if origin.builtin:
                continue
            path = source_file(origin)
            if path is not None:
                self._watches.append(_Watch(origin, path, _stamp(path)))

    @property
    def files(self) -> list[str]:
        return [w.path for w in self._watches]

    def changed(self) -> bool:
        """Whether a watched file changed since the last :meth:`check` (a stat each)."""
        return any(_stamp(w.path) != w.stamp for w in self._watches)

    def pipelines_of(self, source: str) -> list[str]:
        """The pipeline ids registered from ``source`` (a :class:`PluginOrigin` source)."""
        return [pid for pid, origin in self._owners.items() if origin.source == source]

    def check(self) -> ReloadResult:
        """Load every changed source again. Blocking (it imports): run it off the loop."""
        result = ReloadResult()
        modules: dict[tuple[str, bool], ModuleType] = {}  # one fresh import per file a check
        for watch in self._watches:
            stamp = _stamp(watch.path)
            if stamp == watch.stamp:
                continue
            watch.stamp = stamp
            origin = watch.origin
            failures = result.failures.setdefault(origin.source, [])
            try:
                key = (origin.target, origin.is_file)
                if key not in modules:
                    modules[key] = load_source(origin.target, origin.is_file, fresh=True)
                classes = classes_from(modules[key], origin.attr)
            except Exception as exc:
                error = f"{describe_error(exc)}; kept the old code"
                logger.warning("pipeline plugin %s changed but did not load (%s): kept the "
                               "old code", watch.path, describe_error(exc))
                failures.append(PluginFailure(origin.source, error))
                continue
            for cls in classes:
                self._take(cls, watch, result, failures)
        return result

    def _take(self, cls: type[Pipeline], watch: _Watch, result: ReloadResult,
              failures: list[PluginFailure]) -> None:
        error = validate_pipeline(cls)
        if error is None:
            owner = self._owners.get(cls.pipeline_id)
            if owner is not None and owner != watch.origin:
                error = (f"duplicate pipeline id {cls.pipeline_id!r}: already defined by "
                         f"{owner.source}; kept that one")
        if error is not None:
            logger.warning("pipeline plugin %s changed but did not load (%s): kept the old "
                           "code", watch.path, error)
            failures.append(PluginFailure(watch.origin.source, f"{error}; kept the old code"))
            return
        self._owners[cls.pipeline_id] = watch.origin
        result.classes[cls.pipeline_id] = cls
        logger.info("reloaded pipeline %s from %s: new sessions use the new code",
                    cls.pipeline_id, watch.path)
