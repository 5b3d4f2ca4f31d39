"""Finding pipelines: entry points, ``--pipeline`` specs and ``SCOPE_RELAY_PIPELINES``.

Every pipeline, built-ins included, is a :class:`Pipeline` subclass named somewhere:

* the entry point group ``scope_relay.pipelines`` of installed distributions, each entry
  point ``name = "module:Class"``;
* ``scope-relay cloud --pipeline SPEC`` (repeatable);
* ``SCOPE_RELAY_PIPELINES``: SPECs separated by commas (not ``:``, which SPECs use).

A SPEC is ``module:Class``, ``module`` (every pipeline class defined in it), ``path/file.py``
or ``path/file.py:Class``. A broken plugin never stops the app: each problem becomes a
:class:`PluginFailure` naming the source and the cause, and every other pipeline loads.
Duplicate ids: the first found wins (built-ins first, then installed plugins, then
``--pipeline``, then the variable); the later one is a failure naming both sources.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import importlib.util
import logging
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from scope_relay.cloud.pipelines.base import ParamSpec, Pipeline

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "scope_relay.pipelines"
ENV_VAR = "SCOPE_RELAY_PIPELINES"
#: modules of this prefix are our own: their entry points are the built-ins
BUILTIN_PREFIX = "scope_relay."
FLAGS = ("produces_video", "produces_audio", "accepts_video", "accepts_audio")


@dataclass(frozen=True)
class PluginFailure:
    """A plugin that did not load: where it was named, and why (one line)."""

    source: str
    error: str

    def as_dict(self) -> dict[str, str]:
        return {"source": self.source, "error": self.error}


@dataclass(frozen=True)
class PluginOrigin:
    """Where a pipeline class came from, so it can be loaded again (``--reload``)."""

    source: str  #: human-readable: "entry point x = m:C (dist d)", "--pipeline f.py", ...
    target: str  #: a module name, or the path of a ``.py`` file
    attr: str | None  #: the class name; None: every pipeline class defined in the target
    is_file: bool
    builtin: bool = False


@dataclass
class Discovery:
    """Validated pipeline classes in discovery order, the failures, and each class's origin."""

    pipelines: list[type[Pipeline]] = field(default_factory=list)
    failures: list[PluginFailure] = field(default_factory=list)
    #: pipeline_id -> origin of the class that won
    origins: dict[str, PluginOrigin] = field(default_factory=dict)
    #: origins that gave no pipeline (``--reload`` watches them too: a fix is picked up)
    unloaded: list[PluginOrigin] = field(default_factory=list)

    def add(self, classes: Iterable[type[Pipeline]], origin: PluginOrigin) -> None:
        """Validate and keep ``classes``; invalid or duplicate ones become failures."""
        for cls in classes:
            error = validate_pipeline(cls)
            if error is not None:
                self.fail(origin.source, error)
                continue
            first = self.origins.get(cls.pipeline_id)
            if first is not None:
                self.fail(origin.source, f"duplicate pipeline id {cls.pipeline_id!r}: "
                                         f"already defined by {first.source}; kept that one")
                continue
            self.pipelines.append(cls)
            self.origins[cls.pipeline_id] = origin

    def fail(self, source: str, error: str) -> None:
        logger.error("pipeline plugin %s not loaded: %s", source, error)
        self.failures.append(PluginFailure(source, error))


def describe_error(exc: BaseException) -> str:
    """One line: the exception type and message (a SyntaxError with its file and line)."""
    if isinstance(exc, SyntaxError) and exc.filename:
        return f"SyntaxError: {exc.msg} ({exc.filename}, line {exc.lineno})"
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def validate_pipeline(obj: Any) -> str | None:
    """Why ``obj`` cannot be registered as a pipeline, or ``None`` when it can."""
    if not isinstance(obj, type) or not issubclass(obj, Pipeline):
        return f"{obj!r} is not a Pipeline subclass"
    label = obj.__qualname__
    pid = getattr(obj, "pipeline_id", None)
    if not isinstance(pid, str) or not pid.strip():
        return f"{label} has no pipeline_id (a non-empty string)"
    name = getattr(obj, "name", pid)
    if not isinstance(name, str):
        return f"{label}.name must be a string, got {type(name).__name__}"
    for flag in FLAGS:
        value = getattr(obj, flag)
        if not isinstance(value, bool):
            return f"{label}.{flag} must be True or False, got {value!r}"
    if not (obj.produces_video or obj.produces_audio):
        return f"{label} produces neither video nor audio (set produces_video or produces_audio)"
    params = getattr(obj, "params", None)
    if not isinstance(params, Mapping):
        return f"{label}.params must be a mapping of name -> ParamSpec"
    for key, spec in params.items():
        if not isinstance(key, str) or not isinstance(spec, ParamSpec):
            return f"{label}.params[{key!r}] must be a ParamSpec, got {type(spec).__name__}"
    return None


def parse_spec(spec: str) -> tuple[str, str | None, bool]:
    """``(target, class name or None, is_file)`` for a ``--pipeline`` / variable SPEC."""
    spec = spec.strip()
    target, attr = spec, None
    head, sep, tail = spec.rpartition(":")
    if sep and head and tail.isidentifier():
        target, attr = head, tail
    is_file = target.endswith(".py") or os.sep in target
    if is_file:
        target = str(Path(target).expanduser().resolve())
    return target, attr, is_file


def _module_name_for(path: str) -> str:
    digest = hashlib.sha1(path.encode()).hexdigest()[:10]
    stem = "".join(c if c.isalnum() else "_" for c in Path(path).stem)
    return f"_scope_relay_plugin_{stem}_{digest}"


def load_source(target: str, is_file: bool, *, fresh: bool = False) -> ModuleType:
    """Import ``target`` (a module name or a ``.py`` path). ``fresh``: run its current source
    into a new module object, bypassing ``__pycache__`` (whose mtime check has a one-second
    granularity, so a quick edit of the same length would be missed); the old module stays
    in place until the new one has run without error."""
    if not is_file and not fresh:
        return importlib.import_module(target)
    path: str | None
    if is_file:
        name, path = _module_name_for(target), target
        spec = importlib.util.spec_from_file_location(name, path)
    else:
        old = importlib.import_module(target)
        spec, path, name = old.__spec__, getattr(old, "__file__", None), target
        if spec is None or path is None or not path.endswith(".py"):
            return importlib.reload(old)
    if spec is None or path is None:
        raise ImportError(f"cannot load {target}")
    source = Path(path).read_text(encoding="utf-8")
    code = compile(source, path, "exec", dont_inherit=True)
    module = importlib.util.module_from_spec(spec)
    previous = sys.modules.get(name)
    sys.modules[name] = module  # (dataclasses and pickling look a module up by name)
    try:
        exec(code, module.__dict__)
    except BaseException:
        if previous is not None:
            sys.modules[name] = previous
        else:
            sys.modules.pop(name, None)
        raise
    return module


def source_file(origin: PluginOrigin) -> str | None:
    """The file whose changes ``--reload`` watches for ``origin``."""
    if origin.is_file:
        return origin.target
    module = sys.modules.get(origin.target)
    if module is not None:
        return getattr(module, "__file__", None)
    try:  # a module that failed to import: where it would load from, if it exists
        spec = importlib.util.find_spec(origin.target)
    except (ImportError, ValueError):
        return None
    return spec.origin if spec is not None and spec.has_location else None


def classes_from(module: ModuleType, attr: str | None) -> list[Any]:
    """``module.attr``, or (``attr`` None) every class defined in ``module`` that is a
    Pipeline subclass with a ``pipeline_id`` (imported classes and helper bases are skipped)."""
    if attr is not None:
        try:
            return [getattr(module, attr)]
        except AttributeError:
            raise ImportError(f"module {module.__name__!r} has no attribute {attr!r}") from None
    found = [obj for obj in vars(module).values()
             if isinstance(obj, type) and issubclass(obj, Pipeline) and obj is not Pipeline
             and obj.__module__ == module.__name__ and "pipeline_id" in _class_attrs(obj)]
    if not found:
        raise ImportError(f"{module.__name__} defines no Pipeline subclass with a pipeline_id")
    return found


def _class_attrs(cls: type) -> set[str]:
    return {k for klass in cls.__mro__ if klass is not Pipeline for k in vars(klass)}


def load_origin(origin: PluginOrigin, *, fresh: bool = False) -> list[Any]:
    """The classes ``origin`` names (raises whatever importing them raises)."""
    return classes_from(load_source(origin.target, origin.is_file, fresh=fresh), origin.attr)


def _entry_point_origins() -> tuple[list[PluginOrigin], list[PluginOrigin]]:
    """(built-in, other) origins from the ``scope_relay.pipelines`` entry points."""
    builtin: list[PluginOrigin] = []
    others: list[PluginOrigin] = []
    eps = sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP),
                 key=lambda ep: (getattr(ep.dist, "name", "") or "", ep.name))
    seen: set[tuple[str, str]] = set()
    for ep in eps:
        if (ep.name, ep.value) in seen:  # one distribution seen twice on sys.path
            continue
        seen.add((ep.name, ep.value))
        dist = getattr(ep.dist, "name", None)
        source = f"entry point {ep.name} = {ep.value}" + (f" ({dist})" if dist else "")
        module, _, attr = ep.value.partition(":")
        origin = PluginOrigin(source, module.strip(), attr.strip() or None, False,
                              builtin=module.startswith(BUILTIN_PREFIX))
        (builtin if origin.builtin else others).append(origin)
    return builtin, others


def _spec_origins(specs: Iterable[str], label: str) -> list[PluginOrigin]:
    out = []
    for spec in specs:
        if spec.strip():
            target, attr, is_file = parse_spec(spec)
            out.append(PluginOrigin(f"{label} {spec.strip()}", target, attr, is_file))
    return out


def discover_pipelines(extra: Sequence[str] = (),
                       env: Mapping[str, str] | None = None) -> Discovery:
    """Every pipeline named by entry points, ``extra`` (``--pipeline`` SPECs) and ``env``'s
    ``SCOPE_RELAY_PIPELINES`` (``os.environ`` when ``env`` is None), validated."""
    env = os.environ if env is None else env
    found = Discovery()
    try:
        builtin, installed = _entry_point_origins()
    except Exception as exc:  # a distribution with unreadable metadata
        found.fail(f"entry points {ENTRY_POINT_GROUP}", describe_error(exc))
        builtin, installed = [], []
    from scope_relay.cloud.builtin_pipelines.signals import BUILTIN_PIPELINES

    if builtin:  # in the order the page has always listed them (entry points come sorted)
        rank = {cls.__name__: i for i, cls in enumerate(BUILTIN_PIPELINES)}
        builtin.sort(key=lambda o: rank.get(o.attr or "", len(rank)))
    else:
        # Run from a source tree that was never pip-installed, the distribution metadata
        # (and so the built-ins' entry points) is missing: register the built-ins directly.
        found.add(BUILTIN_PIPELINES, PluginOrigin(
            "built-in (no entry-point metadata)", "scope_relay.cloud.builtin_pipelines.signals", None,
            False, builtin=True))
    origins = [*builtin, *installed, *_spec_origins(extra, "--pipeline"),
               *_spec_origins(env.get(ENV_VAR, "").split(","), ENV_VAR)]
    for origin in origins:
        try:
            classes = load_origin(origin)
        except BaseException as exc:  # SystemExit from a plugin must not stop the app either
            if isinstance(exc, (KeyboardInterrupt, GeneratorExit)):
                raise
            found.fail(origin.source, describe_error(exc))
            continue
        found.add(classes, origin)
    loaded = set(found.origins.values())
    found.unloaded = [o for o in origins if o not in loaded]
    return found
