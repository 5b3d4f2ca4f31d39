"""deploy/Dockerfile, read statically: CPU base by default, a non-root user, a HEALTHCHECK on
/health, only the ``cloud`` extra installed against constraints.txt, every package folder copied,
and a .dockerignore that keeps the virtualenv and the tests out of the build context.

Building and running the image is scripts/build-image.sh --smoke (needs podman or docker)."""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
TEST_TOOLS = ("pytest", "hypothesis", "playwright", "ruff", "mypy")


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str
    line: int


def parse(text: str) -> list[Instruction]:
    """Instructions with continuation lines joined; comments and blank lines skipped."""
    out: list[Instruction] = []
    parts: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not parts and (not stripped or stripped.startswith("#")):
            continue
        if parts and stripped.startswith("#"):  # a comment inside a continued instruction
            continue
        if not parts:
            start = number
        if stripped.endswith("\\"):
            parts.append(stripped[:-1].strip())
            continue
        parts.append(stripped)
        joined = " ".join(p for p in parts if p)
        keyword, _, args = joined.partition(" ")
        out.append(Instruction(keyword.upper(), args.strip(), start))
        parts = []
    assert not parts, "the Dockerfile ends inside a continued instruction"
    return out


def stages(instructions: list[Instruction]) -> list[list[Instruction]]:
    """Each build stage, its FROM first; instructions before the first FROM are left out."""
    result: list[list[Instruction]] = []
    for ins in instructions:
        if ins.keyword == "FROM":
            result.append([ins])
        elif result:
            result[-1].append(ins)
    return result


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), args
    return value


@pytest.fixture(scope="module")
def instructions() -> list[Instruction]:
    return parse(DOCKERFILE.read_text())


@pytest.fixture(scope="module")
def final(instructions: list[Instruction]) -> list[Instruction]:
    return stages(instructions)[-1]


@pytest.fixture(scope="module")
def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def first(stage: list[Instruction], keyword: str) -> Instruction:
    found = [i for i in stage if i.keyword == keyword]
    assert found, f"no {keyword} in the final stage"
    return found[-1]


def test_parser_joins_continuations() -> None:
    parsed = parse("# c\nARG A=1\nRUN a \\\n  # inner comment\n  && b\n\nCMD [\"x\"]\n")
    assert [(i.keyword, i.args, i.line) for i in parsed] == [
        ("ARG", "A=1", 2), ("RUN", "a && b", 3), ("CMD", '["x"]', 7)]


def test_base_image_defaults_to_a_cpu_image_and_every_stage_uses_it(
        instructions: list[Instruction]) -> None:
    before_from = instructions[:[i.keyword for i in instructions].index("FROM")]
    args = dict(i.args.partition("=")[::2] for i in before_from if i.keyword == "ARG")
    assert "BASE_IMAGE" in args, "ARG BASE_IMAGE=<image> must come before the first FROM"
    default = args["BASE_IMAGE"].strip().strip("\"'")
    assert default, "BASE_IMAGE needs a default"
    assert not re.search(r"cuda|nvidia|gpu", default, re.I), f"default base {default} is not a CPU image"
    for stage in stages(instructions):
        image = stage[0].args.split()[0]
        assert image in ("${BASE_IMAGE}", "$BASE_IMAGE"), f"line {stage[0].line}: FROM {image}"


def test_runs_as_a_non_root_user_before_the_entrypoint(final: list[Instruction]) -> None:
    users = [i for i in final if i.keyword == "USER"]
    entrypoint = first(final, "ENTRYPOINT")
    assert users, "the final stage sets no USER: the app would run as root"
    user = users[-1]
    assert user.line < entrypoint.line
    name = user.args.split(":")[0]
    assert name not in ("root", "0"), f"USER {user.args} is root"


def test_healthcheck_asks_health_without_curl(final: list[Instruction]) -> None:
    check = first(final, "HEALTHCHECK")
    assert "CMD" in check.args.split(), check.args
    assert "/health" in check.args
    assert "8001" in check.args
    assert not re.search(r"\b(curl|wget)\b", check.args), "the image has no curl or wget"


def test_installs_only_the_cloud_extra_against_the_constraints(
        instructions: list[Instruction]) -> None:
    runs = [i.args for i in instructions if i.keyword == "RUN"]
    installs = [r for r in runs if "pip install" in r]
    assert installs, "no pip install"
    # each `pip install ... .[extras]` of the package itself
    commands = [c for r in installs for c in re.split(r";|&&", r) if "pip install" in c]
    package = [c for c in commands if re.search(r"\.\[[^\]]*\]", c)]
    assert package, "the package is never installed with an extra"
    extras = {e.strip() for c in package for group in re.findall(r"\.\[([^\]]*)\]", c)
              for e in group.split(",")}
    assert extras == {"cloud"}, f"extras {extras}: only [cloud] belongs in the image"
    assert any(re.search(r"(-c|--constraint)[ =]constraints\.txt", c) for c in package), \
        "the CPU install must use -c constraints.txt"
    assert not any(" -e " in f" {c} " or "--editable" in c for c in package), "no editable install"
    for run in runs:
        for tool in TEST_TOOLS:
            assert not re.search(rf"\b{tool}\b", run), f"test tool {tool} installed: {run}"


def test_constraints_pin_torch_for_the_cpu_build() -> None:
    pins = [line.split("#")[0].strip() for line in (ROOT / "constraints.txt").read_text().splitlines()]
    assert any(re.fullmatch(r"torch==[\w.+]+", p) for p in pins), "constraints.txt must pin torch"


def test_exposes_8001_stops_on_sigterm_and_starts_the_cloud_app(
        final: list[Instruction], pyproject: dict) -> None:
    exposed = {p for i in final if i.keyword == "EXPOSE" for p in i.args.split()}
    assert exposed & {"8001", "8001/tcp"}, f"EXPOSE {exposed}"
    stop = [i.args for i in final if i.keyword == "STOPSIGNAL"]
    assert stop in ([], ["SIGTERM"], ["15"]), f"STOPSIGNAL {stop}: the app drains on SIGTERM"
    entrypoint = exec_form(first(final, "ENTRYPOINT").args)
    assert entrypoint[:2] == ["scope-relay", "cloud"], entrypoint
    assert entrypoint[0] in pyproject["project"]["scripts"]
    cmd = exec_form(first(final, "CMD").args)
    assert cmd[cmd.index("--host") + 1] == "0.0.0.0", "listen on all interfaces in a container"
    assert cmd[cmd.index("--port") + 1] == "8001"


def copied_sources(instructions: list[Instruction]) -> set[str]:
    """Sources of COPY instructions from the build context (not --from= another stage)."""
    sources: set[str] = set()
    for ins in instructions:
        if ins.keyword != "COPY":
            continue
        words = shlex.split(ins.args)
        if any(w.startswith("--from") for w in words):
            continue
        words = [w for w in words if not w.startswith("--")]
        sources.update(w.rstrip("/") for w in words[:-1])
    return sources


def test_copies_every_package_folder_and_the_build_metadata(
        instructions: list[Instruction], pyproject: dict) -> None:
    sources = copied_sources(instructions)
    folders = {path.split("/")[0] for path in pyproject["tool"]["setuptools"]["package-dir"].values()}
    missing = folders - sources
    assert not missing, f"package folders not copied into the image: {sorted(missing)}"
    needed = {"pyproject.toml", "constraints.txt", pyproject["project"]["readme"]}
    assert needed <= sources, f"not copied: {sorted(needed - sources)}"
    assert "." not in sources, "copy what the install needs, not the whole context"


def test_the_runtime_stage_takes_the_venv_from_the_builder(final: list[Instruction]) -> None:
    copies = [shlex.split(i.args) for i in final if i.keyword == "COPY"]
    assert any(any(w.startswith("--from=") for w in c) and "/opt/venv" in c for c in copies), \
        "the runtime stage should copy /opt/venv from the builder"
    assert not [i for i in final if i.keyword == "RUN" and "pip install" in i.args], \
        "nothing is pip-installed in the runtime stage"


def ignore_patterns() -> list[str]:
    assert DOCKERIGNORE.is_file(), ".dockerignore missing at the repository root (the build context)"
    lines = [line.strip() for line in DOCKERIGNORE.read_text().splitlines()]
    return [line.strip("/") for line in lines if line and not line.startswith("#")]


def test_dockerignore_keeps_the_venv_and_tests_out_but_not_what_is_copied(
        instructions: list[Instruction]) -> None:
    patterns = ignore_patterns()
    for needed in (".venv", "tests", ".git"):
        assert needed in patterns or "*" in patterns, f".dockerignore does not exclude {needed}"
    for source in copied_sources(instructions):
        excluded = [p for p in patterns if not p.startswith("!") and Path(source).match(p)]
        allowed = [p for p in patterns if p.startswith("!") and Path(source).match(p[1:])]
        assert not excluded or allowed, f"{source} is copied but .dockerignore excludes it ({excluded})"


def test_build_script_keeps_the_healthcheck_with_podman() -> None:
    script = (ROOT / "scripts" / "build-image.sh").read_text()
    assert "--format docker" in script, "podman's default OCI format drops HEALTHCHECK"
    assert "-f deploy/Dockerfile" in script
