"""The public surfaces a pipeline author imports export exactly what docs/pipelines.md
documents: a name added to the code but not to the docs (or the other way round), a
private or missing name in ``__all__``, or a helper imported into the package but left out
of ``__all__`` fails here."""

from __future__ import annotations

import importlib
import re
import types
from pathlib import Path

import pytest

from scope_relay.protocol import errors

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "pipelines.md"
MODULES = ("scope_relay.cloud.pipelines", "scope_relay.testing")


def documented(module: str) -> set[str]:
    """The names in the first column of the guide's table headed by `module`."""
    lines = GUIDE.read_text().splitlines()
    header = f"| `{module}` |"
    starts = [i for i, line in enumerate(lines) if line.startswith(header)]
    assert len(starts) == 1, f"docs/pipelines.md needs one table headed {header!r}"
    names = set()
    for line in lines[starts[0] + 2:]:
        if not line.startswith("|"):
            break
        first = line.split("|")[1]
        match = re.match(r"\s*`([A-Za-z_]\w*)", first)
        assert match, f"a row of the {module} table does not start with a name: {line!r}"
        names.add(match.group(1))
    return names


@pytest.mark.parametrize("name", MODULES)
def test_all_is_exactly_the_documented_names(name):
    module = importlib.import_module(name)
    assert sorted(module.__all__) == sorted(documented(name))
    assert len(set(module.__all__)) == len(module.__all__)


@pytest.mark.parametrize("name", MODULES)
def test_every_exported_name_exists_is_public_and_every_public_name_is_exported(name):
    module = importlib.import_module(name)
    for member in module.__all__:
        assert not member.startswith("_"), member
        assert hasattr(module, member), member
    public = {member for member, value in vars(module).items()
              if not member.startswith("_") and not isinstance(value, types.ModuleType)}
    assert public == set(module.__all__)


def test_the_kit_exports_the_numbered_camera():
    from scope_relay import testing
    from scope_relay.testing import camera

    assert testing.NumberedCamera is camera.NumberedCamera
    assert testing.frame_number is camera.frame_number
    assert testing.frame_number(camera.numbered_frame(1234)) == 1234


def test_there_is_one_pipeline_failed():
    from scope_relay import testing
    from scope_relay.testing import receiver

    assert testing.PipelineFailed is errors.PipelineFailed
    assert receiver.PipelineFailed is errors.PipelineFailed
    assert issubclass(testing.PipelineFailed, errors.ProtocolError)
