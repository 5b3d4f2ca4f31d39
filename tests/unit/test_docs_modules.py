"""docs/architecture.md names every module of the packages (its layout and job tables are
how a newcomer finds where a job lives), and names no module that is gone."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("protocol", "media", "rtc", "util", "cloud", "local", "cli", "testing")
DOC = ROOT / "docs" / "architecture.md"


def modules() -> list[str]:
    return sorted(path.relative_to(ROOT).as_posix() for package in PACKAGES
                  for path in (ROOT / package).rglob("*.py") if path.name != "__init__.py")


def test_every_module_is_named_in_architecture_md():
    text = DOC.read_text()
    found = modules()
    assert len(found) > 50  # the walk itself found the tree
    missing = [module for module in found if f"`{module}`" not in text]
    assert not missing, f"not in docs/architecture.md: {missing}"


def test_every_module_architecture_md_names_exists():
    pattern = r"`((?:" + "|".join(PACKAGES) + r")/[\w/]+\.py)`"
    named = set(re.findall(pattern, DOC.read_text()))
    assert named
    gone = sorted(path for path in named if not (ROOT / path).is_file())
    assert not gone, f"docs/architecture.md names modules that do not exist: {gone}"
