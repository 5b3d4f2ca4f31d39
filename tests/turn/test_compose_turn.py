"""deploy/compose.yaml: its coturn accepts the TURN credentials its cloud app hands out.

Both services come from the compose file itself, interpolated with deploy/compose.env.example
and a test secret: coturn is the real ``turnserver`` with the file's own options (auth,
realm, port range, peer rules), the cloud app is the real app configured by the real
command-line parser from the file's ``command`` and ``environment``. Only what places them on
this machine is changed: coturn listens and relays on 127.0.0.1 (``--listening-ip``,
``--relay-ip``; on the box it has the host's addresses) and may relay to 127.0.0.1, where
both relayed candidates are here (``--allow-loopback-peers --allowed-peer-ip=127.0.0.1``,
tests only: tests/turn/test_peer_rules.py runs the peer rules with no such allowance), its
TURN port is a free one (``SCOPE_TURN_PORT``, a variable of the file), its secret file is in
a temporary directory, and the cloud app runs in this process on a free port. Every peer
has its host candidates taken away, as for a relay behind NAT and a cloud app on a bridge
network: media can only flow through coturn.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from scope_relay.cli.main import _cloud_config, build_parser

from helpers.compose import compose, coturn_command, env_file
from helpers.servers import cloud_server
from helpers.turn import candidate_types, forbid_host_candidates, relayed_test_tone, turn_probe

pytestmark = [
    pytest.mark.turn,
    pytest.mark.skipif(shutil.which("turnserver") is None,
                       reason="coturn not installed (scripts/setup.sh --system)"),
]
#: letters and digits: coturn's image runs its arguments through sh (compose.env.example)
SECRET = "composeTurnTestSecret0123"
API_KEY = "compose-test-key"
AUTH = {"Authorization": f"Key {API_KEY}"}


# --- the compose file, interpolated as docker compose does ---------------------------------

def compose_env(**overrides: str) -> dict[str, str]:
    """compose.env.example's values plus ``overrides``."""
    return env_file() | overrides


def compose_services(**overrides: str) -> dict[str, Any]:
    """The services of deploy/compose.yaml with compose.env.example's values plus ``overrides``."""
    return compose(compose_env(**overrides))["services"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- the two services ----------------------------------------------------------------------

@contextlib.contextmanager
def run_coturn(env: dict[str, str], port: int) -> Iterator[None]:
    """The compose file's coturn (its entrypoint script and command, the secret in a file),
    placed on 127.0.0.1; returns once it takes TCP connections on ``port``."""
    with tempfile.TemporaryDirectory() as tmp:
        command, coturn_env = coturn_command(env, Path(tmp))
        assert f"--listening-port={port}" in command
        log_path = os.path.join(tmp, "turn.log")
        with open(log_path, "w") as log:
            proc = subprocess.Popen(
                [*command,
                 # test placement only (see the module docstring)
                 "--listening-ip=127.0.0.1", "--relay-ip=127.0.0.1", "--allow-loopback-peers",
                 "--allowed-peer-ip=127.0.0.1", "--simple-log", f"--pidfile={tmp}/turn.pid"],
                stdout=log, stderr=subprocess.STDOUT,
                env={**os.environ, **coturn_env, "TURN_RUNTIME_DIR": tmp})
        try:
            deadline = time.monotonic() + 15
            while True:
                assert proc.poll() is None, f"coturn exited:\n{Path(log_path).read_text()}"
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                    break
                assert time.monotonic() < deadline, f"coturn not listening:\n{Path(log_path).read_text()}"
                time.sleep(0.05)
            yield
        finally:
            proc.terminate()
            proc.wait(10)


def cloud_config(service: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The cloud app's configuration from the service's ``command`` and ``environment``,
    through the real ``scope-relay cloud`` parser (as the container's entrypoint runs it)."""
    assert service["entrypoint"] == ["scope-relay", "cloud"]
    for name, value in service["environment"].items():
        monkeypatch.setenv(name, value)  # the parser reads its defaults from the environment
    config = _cloud_config(build_parser().parse_args(["cloud", *service["command"]]), embedded=False)
    # in this process: on 127.0.0.1 (cloud_server picks the port)
    return {f.name: getattr(config, f.name) for f in dataclasses.fields(config)} | {"loopback_ice": True}


@pytest.fixture
def no_host_candidates(monkeypatch):
    forbid_host_candidates(monkeypatch)


# --- the tests -----------------------------------------------------------------------------

async def test_compose_coturn_relays_media_with_the_cloud_apps_credentials(no_host_candidates, monkeypatch):
    port = free_port()
    env = compose_env(SCOPE_TURN_SECRET=SECRET, SCOPE_CLOUD_API_KEY=API_KEY,
                      SCOPE_TURN_HOST="127.0.0.1", SCOPE_TURN_EXTERNAL_IP="127.0.0.1",
                      SCOPE_TURN_PORT=str(port))
    config = cloud_config(compose(env)["services"]["cloud"], monkeypatch)
    assert config["ice"].turn_secret == SECRET and config["api_key"] == API_KEY
    with run_coturn(env, port):
        async with cloud_server(**config) as cloud, aiohttp.ClientSession() as http, \
                turn_probe(http, cloud.ws_url, headers=AUTH) as probe:
            (turn,) = probe.servers
            assert turn["urls"] == [f"turn:127.0.0.1:{port}?transport=udp"]
            assert turn["username"].split(":")[0].isdigit()  # REST credentials: <expiry>:<user>
            # coturn granted an allocation to the relay's side, and (checked in
            # relayed_test_tone) to the cloud app's; its audio reaches the relay through coturn
            assert candidate_types(probe.offer_sdp) == {"relay"}
            frame = await relayed_test_tone(probe)
            assert frame.sample_rate == 48_000


async def test_compose_coturn_refuses_a_cloud_app_with_another_secret(no_host_candidates, monkeypatch):
    port = free_port()
    common = dict(SCOPE_CLOUD_API_KEY=API_KEY, SCOPE_TURN_HOST="127.0.0.1",
                  SCOPE_TURN_EXTERNAL_IP="127.0.0.1", SCOPE_TURN_PORT=str(port))
    cloud = compose_services(SCOPE_TURN_SECRET="notTheSameSecret", **common)["cloud"]
    with run_coturn(compose_env(SCOPE_TURN_SECRET=SECRET, **common), port):
        async with cloud_server(**cloud_config(cloud, monkeypatch)) as served, \
                aiohttp.ClientSession() as http, \
                turn_probe(http, served.ws_url, headers=AUTH) as probe:
            assert probe.servers[0]["username"]  # credentials were handed out...
            assert candidate_types(probe.offer_sdp) == set()  # ...and coturn refused them
