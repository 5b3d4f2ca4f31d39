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


async def test_osc_pinned_to_the_performers_session():
    """By default OSC drives the newest session, so with OSC open to the LAN a neighbour's
    new session would take the performer's gear; pinned, it stays with the performer's
    session until that session releases it or ends."""
    async with cloud_server() as cloud, relay_server(cloud, osc_address=("127.0.0.1", 0)) as relay, \
            httpx.AsyncClient(base_url=relay.url, timeout=10) as http:
        osc = relay.app[RELAY_KEY].osc
        assert osc is not None
        client = SimpleUDPClient("127.0.0.1", osc.port)

        def cloud_session(interval: float):
            (found,) = [s for s in cloud.app[STATE_KEY].sessions.values()
                        if s.runner.params.get("interval") == interval]
            return found

        async with connected(relay.url, {"pipeline_ids": ["test-tone"], "interval": 0.5},
                             video=False) as performer:
            await performer.wait_audio_frames(5)
            pinned = await http.post("/api/v1/osc", json={"sessionId": performer.session_id})
            assert pinned.status_code == 200, pinned.text
            assert pinned.json() == {"target": "pinned", "session": performer.session_id[:8]}
            async with connected(relay.url, {"pipeline_ids": ["test-tone"], "interval": 0.7},
                                 video=False) as neighbour:
                await neighbour.wait_audio_frames(5)
                mine, theirs = cloud_session(0.5), cloud_session(0.7)
                client.send_message("/param/frequency", 660.0)
                await wait_until(lambda: mine.runner.params.get("frequency") == 660.0)
                assert theirs.runner.params.get("frequency") == 440.0
                # the neighbour cannot take the pin (nor release it), nor use a made-up id
                taken = await http.post("/api/v1/osc", json={"sessionId": neighbour.session_id})
                assert taken.status_code == 409 and taken.json()["code"] == "OSC_PINNED"
                released = await http.post("/api/v1/osc", json={
                    "sessionId": neighbour.session_id, "pinned": False})
                assert released.status_code == 409
                made_up = await http.post("/api/v1/osc", json={"sessionId": "0" * 32})
                assert made_up.status_code == 404 and made_up.json()["code"] == "UNKNOWN_SESSION"
                assert (await http.get("/api/v1/stats")).json()["osc"]["pinned"] == 1
                # released by its holder: back to the newest session
                released = await http.post("/api/v1/osc", json={
                    "sessionId": performer.session_id, "pinned": False})
                assert released.json() == {"target": "newest",
                                           "session": neighbour.session_id[:8]}
                client.send_message("/param/frequency", 770.0)
                await wait_until(lambda: theirs.runner.params.get("frequency") == 770.0)
                assert mine.runner.params["frequency"] == 660.0
                # a pin ends with its session
                assert (await http.post("/api/v1/osc", json={
                    "sessionId": neighbour.session_id})).status_code == 200
            await wait_until(lambda: len(relay.app[RELAY_KEY].sessions) == 1)
            assert (await http.get("/api/v1/osc")).json() == {
                "target": "newest", "session": performer.session_id[:8]}


async def test_osc_api_when_osc_is_off(stack):
    _, relay = stack
    async with httpx.AsyncClient(base_url=relay.url, timeout=10) as http:
        off = await http.post("/api/v1/osc", json={"sessionId": "0" * 32})
        assert off.status_code == 409 and off.json()["code"] == "OSC_OFF"
        bad = await http.get("/api/v1/osc")
        assert bad.status_code == 409
