"""Architecture rules as a test: cloud and local never import each other; the shared
packages (media, rtc, util) import neither; protocol, the contract, imports nothing but
the standard library; no torch anywhere but cloud/. testing (the public test helper) may
import both sides, like cli, and nothing of ours imports it. No two modules import each
other, directly or in a circle."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SIDES = ("scope_relay.cloud", "scope_relay.local", "scope_relay.cli", "scope_relay.testing")
FORBIDDEN = {
    "protocol": ("torch", "numpy", "av", "aiortc", "aioice", "aiohttp", "soxr",
                 "scope_relay.media", "scope_relay.rtc", "scope_relay.util", *SIDES),
    "media": ("torch", "aiortc", "aiohttp", "scope_relay.rtc", *SIDES),
    "rtc": ("torch", "aiohttp", *SIDES),
    "util": ("torch", "aiortc", "scope_relay.media", "scope_relay.rtc", *SIDES),
    "local": ("torch", "scope_relay.cloud", "scope_relay.cli", "scope_relay.testing"),
    "cloud": ("scope_relay.local", "scope_relay.cli", "scope_relay.testing"),
    "cli": ("scope_relay.testing",),
    # streams through both sides in-process; torch only by way of cloud
    "testing": ("torch", "scope_relay.cli"),
}
#: Packages the relay imports: they must all import without torch.
TORCH_FREE = ("local", "protocol", "media", "rtc", "util")


def imported_modules(path: Path, package: str) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the package
                parts = (f"scope_relay.{package}." + ".".join(
                    path.relative_to(ROOT / package).parent.parts)).rstrip(".").split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                found.add(f"{base}.{node.module}" if node.module else base)
            elif node.module:
                found.add(node.module)
    return found


@pytest.mark.parametrize("package", list(FORBIDDEN))
def test_dependency_direction(package):
    violations = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for module in imported_modules(path, package):
            for banned in FORBIDDEN[package]:
                if module == banned or module.startswith(banned + "."):
                    violations.append(f"{path.relative_to(ROOT)} imports {module}")
    assert not violations, "\n".join(violations)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(["scope_relay", *parts])


def _module_level_imports(body: list[ast.stmt]) -> Iterator[ast.Import | ast.ImportFrom]:
    """Imports run when the module is (under ``if``, ``if TYPE_CHECKING`` included, ``try``
    and ``with``); those inside functions run later and cannot form a circle at import."""
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If):
            yield from _module_level_imports(node.body)
            yield from _module_level_imports(node.orelse)
        elif isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody,
                          *(handler.body for handler in node.handlers)):
                yield from _module_level_imports(block)
        elif isinstance(node, ast.With):
            yield from _module_level_imports(node.body)


def import_graph() -> dict[str, set[str]]:
    """Each module of our packages -> the modules of our packages it imports at module
    level (``from pkg import name`` counts as importing ``pkg.name`` when that is a module)."""
    paths = {_module_name(path): path for package in FORBIDDEN
             for path in (ROOT / package).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in _module_level_imports(ast.parse(path.read_text(), str(path)).body):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
                continue
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(filter(None, [*parts[: len(parts) - node.level + 1], base]))
            targets.update(f"{base}.{alias.name}" if f"{base}.{alias.name}" in paths else base
                           for alias in node.names)
        graph[name] = {t for t in targets if t in paths and t != name}
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for target in sorted(graph[module]):
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            group = [stack.pop()]
            while group[-1] != module:
                group.append(stack.pop())
            if len(group) > 1:
                cycles.append(sorted(group))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return cycles


def test_no_import_cycles():
    """No circle among our modules' module-level imports, ``if TYPE_CHECKING`` ones
    included: a circle through type hints is still two modules that need each other."""
    graph = import_graph()
    assert "scope_relay.cloud.control.channel" in graph["scope_relay.cloud.app"]  # edges found
    assert import_cycles(graph) == []


def test_the_cycle_check_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert import_cycles(graph) == [["a", "b", "c"]]


def test_local_relay_runs_without_torch():
    """Import every module of the relay's packages with torch made unimportable."""
    packages = ", ".join(f"scope_relay.{name}" for name in TORCH_FREE)
    code = (
        "import sys; sys.modules['torch'] = None\n"
        f"import pkgutil, importlib, {packages}\n"
        f"for pkg in ({packages}):\n"
        "    for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + '.'):\n"
        "        importlib.import_module(m.name)\n"
        "assert 'scope_relay.cloud' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
