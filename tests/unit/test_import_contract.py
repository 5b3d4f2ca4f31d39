"""Architecture rules as a test: cloud and local never import each other; the shared
packages (media, rtc, util) import neither; protocol, the contract, imports nothing but
the standard library; no torch anywhere but cloud/. testing (the public test helper) may
import both sides, like cli, and nothing of ours imports it."""

from __future__ import annotations

import ast
import subprocess
import sys
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
    found = set()
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
