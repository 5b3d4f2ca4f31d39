"""The error catalogue (protocol/errors.py) is the one place a wire code is spelled: codes
are unique, no module of the packages and no page script spells one except where the page
must compare a code (and then it names a catalogue code), and docs/protocol.md's table
lists exactly the catalogue's codes with the same statuses."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from scope_relay.protocol import messages as m
from scope_relay.protocol.errors import (
    InvalidMessage,
    ProtocolError,
    UnknownMessageType,
    Unnamed,
    catalogue,
)

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("protocol", "media", "rtc", "util", "cloud", "local", "cli", "testing")
CATALOGUE_FILE = ROOT / "protocol" / "errors.py"
PAGE_SCRIPTS = ROOT / "local" / "static" / "js"
CODES = {cls.code: cls for cls in catalogue()}
#: a quoted JS string of capitals, as a code would be written
JS_CAPITALS = re.compile(r"""(["'`])([A-Z][A-Z0-9_]*)\1""")
#: a code compared in JS: ``x.code === "NAME"`` (or ``!==``, ``==``, ``!=``, either order)
JS_COMPARED = re.compile(r"""\bcode\s*[!=]==?\s*(["'`])([A-Z][A-Z0-9_]*)\1"""
                         r"""|(["'`])([A-Z][A-Z0-9_]*)\3\s*[!=]==?\s*[\w.?]*\bcode\b""")


def test_codes_are_unique_and_well_formed():
    classes = catalogue()
    codes = [cls.code for cls in classes]
    assert len(codes) == len(set(codes)), sorted(c for c in codes if codes.count(c) > 1)
    assert ProtocolError in classes and len(classes) > 30
    for cls in classes:
        assert re.fullmatch(r"[A-Z][A-Z0-9_]*", cls.code), cls
        assert 400 <= cls.status <= 599, cls


def _package_files() -> list[Path]:
    return [path for package in PACKAGES for path in sorted((ROOT / package).rglob("*.py"))
            if path != CATALOGUE_FILE]


def _spellings(path: Path, root: Path = ROOT) -> list[str]:
    """Where ``path`` spells a catalogue code, declares a code of its own (``code = "X"``
    in a class body) or overrides one (``code="X"`` in a call)."""
    found = []
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        where = f"{path.relative_to(root)}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in CODES:
            found.append(f"{where} spells {node.value!r}")
        elif isinstance(node, ast.ClassDef):
            for stmt in node.body:
                targets = (stmt.targets if isinstance(stmt, ast.Assign)
                           else [stmt.target] if isinstance(stmt, ast.AnnAssign) else [])
                value = getattr(stmt, "value", None)
                if (any(isinstance(t, ast.Name) and t.id == "code" for t in targets)
                        and isinstance(value, ast.Constant) and isinstance(value.value, str)):
                    found.append(f"{where} class {node.name} declares code {value.value!r}")
        elif isinstance(node, ast.Call):
            for keyword in node.keywords:
                if (keyword.arg == "code" and isinstance(keyword.value, ast.Constant)
                        and isinstance(keyword.value.value, str)):
                    found.append(f"{where} passes code={keyword.value.value!r}")
    return found


def test_no_module_spells_a_code_outside_the_catalogue():
    files = _package_files()
    assert len(files) > 50  # the walk found the packages
    violations = [hit for path in files for hit in _spellings(path)]
    assert not violations, "\n".join(violations)


def test_the_scan_finds_what_it_forbids(tmp_path):
    """The scan itself: a code literal, a declared code and an override are all caught."""
    sample = tmp_path / "sample.py"
    sample.write_text('class Mine(Exception):\n    code = "MINE"\n\n'
                      'def f(error):\n    raise error("x", code="OTHER")\n\n'
                      'CHECK = "PIPELINE_FAILED"\n')
    assert sorted(hit.split(" ", 1)[1] for hit in _spellings(sample, tmp_path)) == [
        "class Mine declares code 'MINE'", "passes code='OTHER'", "spells 'PIPELINE_FAILED'"]


def test_the_page_names_only_catalogue_codes():
    compared: set[str] = set()
    spelled: set[str] = set()
    for path in sorted(PAGE_SCRIPTS.glob("*.js")):
        text = path.read_text()
        for match in JS_COMPARED.finditer(text):
            compared.add(match.group(2) or match.group(4))
        spelled.update(name for _, name in JS_CAPITALS.findall(text) if name in CODES)
    assert compared, "the page compares no error code: update this test"
    assert compared <= CODES.keys(), f"the page compares unknown codes: {compared - CODES.keys()}"
    # a code written in the page for any other purpose than comparing it: name it here
    assert spelled <= compared, f"the page spells {spelled - compared} without comparing"


def _documented() -> dict[str, str]:
    """Code -> status column of docs/protocol.md's table under "### Codes"."""
    text = (ROOT / "docs" / "protocol.md").read_text()
    section = text.split("\n### Codes\n", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, str] = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not cells[0].startswith("`"):
            continue
        for code in re.findall(r"`([A-Z][A-Z0-9_]*)`", cells[0]):
            assert code not in rows, f"{code} is listed twice"
            rows[code] = cells[1]
    return rows


def test_the_docs_table_is_the_catalogue():
    documented = _documented()
    assert documented.keys() - CODES.keys() == set(), "documented but not in the catalogue"
    assert CODES.keys() - documented.keys() == set(), "in the catalogue but not documented"
    for code, status in documented.items():
        cls = CODES[code]
        expected = "—" if issubclass(cls, Unnamed) else str(cls.status)
        assert status == expected, f"{code}: docs say {status}, catalogue {expected}"


@pytest.mark.parametrize("raw, kind, request_id, request_type", [
    ('{"type": "api", "request_id": "r7", "method": "BREW", "path": "/x"}',
     InvalidMessage, "r7", "api"),
    ('{"type": "offer", "request_id": 8}', InvalidMessage, "8", "offer"),
    ('{"type": "teleport", "request_id": "r9"}', UnknownMessageType, "r9", "teleport"),
    ('{"request_id": "r10"}', InvalidMessage, "r10", None),
])
def test_a_refusal_names_its_request(raw, kind, request_id, request_type):
    """``request_id`` and ``request_type`` are the error's own fields, and its reply takes
    the form of the refused request's reply (``api``: an ``api_response``)."""
    with pytest.raises(kind) as refused:
        m.parse_request(raw)
    exc = refused.value
    assert (exc.request_id, exc.request_type) == (request_id, request_type)
    reply = m.failure(exc)
    assert reply["type"] == ("api_response" if request_type == "api" else "error")
    assert (reply["request_id"], reply["code"], reply["status"]) == (request_id, kind.code, 400)
