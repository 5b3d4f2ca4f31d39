"""OSC input on the relay: ``/param/<name> <value>`` over UDP drives the newest session's
pipeline, checked against the pipeline's schema the way the page checks its controls."""

from __future__ import annotations

import re

import httpx
from pythonosc.udp_client import SimpleUDPClient

from scope_relay.cloud.app import STATE_KEY
from scope_relay.local.inputs.osc import coerce
from scope_relay.local.server import RELAY_KEY

from helpers.peers import connected
from helpers.servers import cloud_server, relay_server
from helpers.waiting import wait_until


def test_values_are_checked_like_the_page_does():
    spec = {"type": "number", "minimum": 20.0, "maximum": 11000.0}
    assert coerce("f", 880, spec) == 880
    for bad in (5, 20000, float("nan"), "880", True):
        try:
            coerce("f", bad, spec)
        except ValueError:
            continue
        raise AssertionError(f"{bad!r} accepted")
    assert coerce("n", 3.0, {"type": "integer"}) == 3
    assert coerce("b", 1, {"type": "boolean"}) is True
    assert coerce("p", "a red sky", {"type": "prompts"}) == [{"text": "a red sky", "weight": 1.0}]


async def test_osc_message_changes_the_tone_frequency():
    async with cloud_server() as cloud, relay_server(cloud, osc_address=("127.0.0.1", 0)) as relay:
        osc = relay.app[RELAY_KEY].osc
        assert osc is not None and osc.port > 0
        client = SimpleUDPClient("127.0.0.1", osc.port)
        client.send_message("/param/frequency", 880.0)  # nobody to drive yet: counted, no error
        await wait_until(lambda: osc.counts.no_session == 1)
        async with connected(relay.url, {"pipeline_ids": ["test-tone"]}, video=False) as peer:
            await peer.wait_audio_frames(10)
            (session,) = cloud.app[STATE_KEY].sessions.values()
            client.send_message("/param/frequency", 880.0)
            await wait_until(lambda: session.runner.params.get("frequency") == 880.0, timeout=10)
            # out of range, unknown, wrong type, wrong address: refused here, never sent
            client.send_message("/param/frequency", 50_000.0)
            client.send_message("/param/no_such_knob", 1.0)
            client.send_message("/param/volume", "loud")
            client.send_message("/frequency", 300.0)
            await wait_until(lambda: osc.counts.refused == 4)
            assert session.runner.params["frequency"] == 880.0
            assert osc.stats()["forwarded"] == 1
            async with httpx.AsyncClient(base_url=relay.url, timeout=10) as http:
                assert (await http.get("/api/v1/stats")).json()["osc"]["refused"] == 4
                assert "scope_relay_osc_refused 4.0" in (await http.get("/metrics")).text
            # the relay remembers it for a cloud-hop reconnect, like the page's own updates
            (browser_session,) = relay.app[RELAY_KEY].sessions.values()
            assert browser_session.parameter_state["frequency"] == 880.0


def test_busy_ports_are_one_line_each(capsys, monkeypatch):
    """The expected failures at start-up say which port and which flag moves it."""
    import socket

    from scope_relay.cli.main import main

    for name in ("SCOPE_CLOUD_APP_ID", "SCOPE_CLOUD_WS_URL"):
        monkeypatch.delenv(name, raising=False)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, \
            socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
        udp.bind(("127.0.0.1", 0))
        tcp.bind(("127.0.0.1", 0))
        tcp.listen()
        busy_udp, busy_tcp = udp.getsockname()[1], tcp.getsockname()[1]
        assert main(["demo", "--port", str(busy_tcp)]) == 1
        line = capsys.readouterr().err.strip().splitlines()[-1]
        hint = re.fullmatch(rf"scope-relay: port {busy_tcp} is in use; try --port (\d+) "
                            r"\(free now\) or --port 0 \(any free port\)", line)
        assert hint, line
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as check:
            check.bind(("127.0.0.1", int(hint.group(1))))  # it was free
        assert main(["demo", "--port", "0", "--osc-port", str(busy_udp)]) == 1
        line = capsys.readouterr().err.strip().splitlines()[-1]
        hint = re.fullmatch(rf"scope-relay: OSC port {busy_udp} is in use; try --osc-port (\d+)",
                            line)
        assert hint and int(hint.group(1)) != busy_udp, line
