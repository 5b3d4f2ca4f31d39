"""deploy/compose.yaml read as ``docker compose`` reads it: variables interpolated from an
env file (compose.env.example), so tests check the file users run, not a copy of it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
#: ``$$``, ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``, ``${VAR:?error}``, ``$VAR``
VARIABLE = re.compile(r"\$\$|\$\{(\w+)(?:(:?[-?])([^}]*))?\}|\$(\w+)")


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's variable syntax, in every string of ``value``; an unset ``${VAR:?...}``
    raises ``KeyError`` naming it, as compose refuses to start."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def one_variable(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name, op, arg = m.group(1) or m.group(4), m.group(2) or "", m.group(3)
        unset = not env.get(name) if op.startswith(":") else name not in env
        if unset and op.endswith("-"):
            return arg
        if unset and op.endswith("?"):
            raise KeyError(f"{name}: {arg}")
        return env.get(name, "")

    return VARIABLE.sub(one_variable, value)


def env_file(path: Path = DEPLOY / "compose.env.example") -> dict[str, str]:
    """``NAME=value`` lines, comments and blank lines skipped."""
    pairs = (line.split("=", 1) for line in path.read_text().splitlines()
             if line.strip() and not line.lstrip().startswith("#"))
    return {k.strip(): v.strip() for k, v in pairs}


def compose(env: dict[str, str]) -> dict[str, Any]:
    """deploy/compose.yaml with ``env``'s values."""
    return interpolate(yaml.safe_load((DEPLOY / "compose.yaml").read_text()), env)


def coturn_command(env: dict[str, str], secret_dir: Path) -> tuple[list[str], dict[str, str]]:
    """The coturn service's command line and environment as Compose runs them, here: its
    entrypoint script read from where the file's volume mounts it from, and the secret written
    to a file in ``secret_dir`` as Compose writes ``/run/secrets/turn_secret``."""
    project = compose(env)
    service = project["services"]["coturn"]
    (mount,) = service["volumes"]
    source, target, _ = mount.split(":")
    command = [part.replace(target, str((DEPLOY / source).resolve())) for part in service["entrypoint"]]
    (secret,) = service["secrets"]
    variable = project["secrets"][secret]["environment"]
    assert service["environment"]["TURN_SECRET_FILE"] == f"/run/secrets/{secret}"
    secret_file = secret_dir / secret
    secret_file.write_text(env[variable] + "\n")
    return [*command, *service["command"]], {"TURN_SECRET_FILE": str(secret_file)}
