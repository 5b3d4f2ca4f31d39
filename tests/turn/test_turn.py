"""TURN through a real coturn on 127.0.0.1, with the REST credentials our cloud hands out."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile

import aiohttp
import pytest

from scope_relay.cloud.control.ice_servers import IceServerConfig

from helpers.servers import cloud_server
from helpers.turn import candidate_types, forbid_host_candidates, relayed_test_tone, turn_probe

pytestmark = [
    pytest.mark.turn,
    pytest.mark.skipif(shutil.which("turnserver") is None,
                       reason="coturn not installed (scripts/setup.sh --system)"),
]
SECRET = "turn-test-secret"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def coturn():
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        log = open(os.path.join(tmp, "turn.log"), "w")
        proc = subprocess.Popen(
            ["turnserver", "-c", "/dev/null", "--listening-ip=127.0.0.1", "--relay-ip=127.0.0.1",
             f"--listening-port={port}", "--use-auth-secret", f"--static-auth-secret={SECRET}",
             "--realm=scope.test", "--allow-loopback-peers", "--no-cli", "--no-tls", "--no-dtls",
             "--log-file=stdout", "--simple-log", f"--pidfile={tmp}/turn.pid"],
            stdout=log, stderr=subprocess.STDOUT)
        try:
            yield port
        finally:
            proc.terminate()
            proc.wait(10)
            log.close()


@pytest.fixture
def no_host_candidates(monkeypatch):
    forbid_host_candidates(monkeypatch)


async def test_relay_only_media_flows_through_coturn(coturn, no_host_candidates):
    ice = IceServerConfig(turn_urls=[f"turn:127.0.0.1:{coturn}?transport=udp"],
                          turn_secret=SECRET)
    async with cloud_server(ice=ice) as cloud, aiohttp.ClientSession() as http, \
            turn_probe(http, cloud.ws_url) as probe:
        username = probe.servers[0]["username"]
        assert username.split(":")[0].isdigit()  # <expiry>:<user>
        assert candidate_types(probe.offer_sdp) == {"relay"}
        frame = await relayed_test_tone(probe)  # audio arrives over the relayed pair
        assert frame.sample_rate == 48_000


async def test_wrong_secret_gives_no_relay_candidates(coturn, no_host_candidates):
    ice = IceServerConfig(turn_urls=[f"turn:127.0.0.1:{coturn}?transport=udp"],
                          turn_secret="wrong")
    async with cloud_server(ice=ice) as cloud, aiohttp.ClientSession() as http, \
            turn_probe(http, cloud.ws_url) as probe:
        # coturn refuses silently: no relayed candidate, hence nothing to connect over
        assert candidate_types(probe.offer_sdp) == set()
