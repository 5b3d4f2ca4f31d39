"""Feedback the sender gets: a value the cloud refuses comes back on the ``parameters``
channel through the relay (and OSC's refusals are logged at the relay, rate-limited);
with ``--reload``, an edit that does not load reaches the sessions running that pipeline.
Real cloud app, relay and a page-like aiortc peer."""

from __future__ import annotations

import asyncio
import json
import logging
import textwrap
from typing import Any

import httpx

from scope_relay.cloud.app import STATE_KEY
from scope_relay.cloud.hosting.discovery import ENV_VAR
from scope_relay.local.server import RELAY_KEY

from helpers.peers import BrowserPeer, connected
from helpers.servers import cloud_server, relay_server
from helpers.waiting import wait_until


def collect_notices(peer: BrowserPeer) -> list[dict[str, Any]]:
    """Every JSON object the relay sends the peer on its ``parameters`` channel."""
    notices: list[dict[str, Any]] = []

    @peer.channel.on("message")
    def on_message(message: Any) -> None:
        notices.append(json.loads(message))

    return notices


async def test_a_refused_value_reaches_the_sender(stack):
    cloud, relay = stack
    async with connected(relay.url, {"pipeline_ids": ["test-tone"]}, video=False) as peer:
        notices = collect_notices(peer)
        await peer.wait_audio_frames(10)
        await peer.send_parameters({"frequency": "loud"})  # wrong type
        await peer.send_parameters({"frequency": 1e9, "volume": 0.2})  # out of range; ok
        await wait_until(lambda: len(notices) >= 2, timeout=10)
        assert [n["type"] for n in notices] == ["parameter_refused"] * 2
        assert [(n["name"], n["value"]) for n in notices] == [("frequency", "loud"),
                                                              ("frequency", 1e9)]
        assert all("frequency" in n["reason"] for n in notices)
        (cloud_session,) = cloud.app[STATE_KEY].sessions.values()
        await wait_until(lambda: cloud_session.runner.params["volume"] == 0.2)
        assert cloud_session.runner.params["frequency"] == 440.0  # the old value stays
        async with httpx.AsyncClient(base_url=relay.url, timeout=10) as http:
            (stats,) = (await http.get("/api/v1/stats")).json()["sessions"]
        assert stats["parameters_refused"] == 2
        assert stats["last_parameter_refused"]["value"] == 1e9
        assert cloud_session.stats()["notices_sent"] == 2


async def test_an_osc_refusal_is_logged_once_at_the_relay(stack, caplog):
    """Past OSC's own schema check (a value the cloud still refuses): the gear has no page,
    so the relay's terminal says it, once per interval however many come."""
    _, relay = stack
    caplog.set_level(logging.WARNING, logger="scope_relay.local")
    async with connected(relay.url, {"pipeline_ids": ["test-tone"]}, video=False) as peer:
        notices = collect_notices(peer)
        await peer.wait_audio_frames(10)
        (session,) = relay.app[RELAY_KEY].sessions.values()
        for _ in range(5):
            updates = {"volume": 7.0}
            session.on_parameters(json.dumps(updates), updates, source="osc")
        await wait_until(lambda: session.parameters_refused == 5, timeout=10)
        lines = [r.getMessage() for r in caplog.records if "OSC /param/volume" in r.getMessage()]
        assert len(lines) == 1 and "refused" in lines[0], lines
        assert len(notices) == 5  # the page is told of each


TONE = """
from scope_relay.cloud.builtin_pipelines.signals import TestTone


class EditedTone(TestTone):
    pipeline_id = "edited-tone"
"""


async def test_a_reload_failure_reaches_the_running_session(tmp_path, monkeypatch):
    plugin = tmp_path / "edited_tone.py"
    plugin.write_text(textwrap.dedent(TONE))
    monkeypatch.setenv(ENV_VAR, f"{plugin}:EditedTone")
    async with cloud_server(reload=True) as cloud, relay_server(cloud) as relay:
        async with connected(relay.url, {"pipeline_ids": ["edited-tone"]}, video=False) as peer, \
                connected(relay.url, {"pipeline_ids": ["test-tone"]}, video=False) as other:
            notices, others = collect_notices(peer), collect_notices(other)
            await asyncio.gather(peer.wait_audio_frames(10), other.wait_audio_frames(10))
            plugin.write_text(textwrap.dedent(TONE) + "\ndef broken(:\n")
            await wait_until(lambda: notices, timeout=15)  # polled once a second
            (notice,) = notices
            assert notice["type"] == "pipeline_reload_failed"
            assert notice["pipeline"] == "edited-tone" and "SyntaxError" in notice["error"]
            await peer.wait_audio_frames(25)  # the old code plays on
            async with httpx.AsyncClient(base_url=relay.url, timeout=10) as http:
                stats = (await http.get(f"/api/v1/webrtc/offer/{peer.session_id}")).json()
            assert stats["reload_failed"]["pipeline"] == "edited-tone"
            assert "SyntaxError" in stats["reload_failed"]["error"]
            assert not others  # a session on another pipeline hears nothing


async def test_gear_sending_garbage_is_logged_once_not_per_message(caplog):
    """OSC's own refusals (the schema check at the relay): every one counted (or coalesced
    into a later value), one line."""
    from pythonosc.udp_client import SimpleUDPClient

    caplog.set_level(logging.WARNING, logger="scope_relay.local.inputs.osc")
    async with cloud_server() as cloud, \
            relay_server(cloud, osc_address=("127.0.0.1", 0)) as relay:
        osc = relay.app[RELAY_KEY].osc
        assert osc is not None
        async with connected(relay.url, {"pipeline_ids": ["test-tone"]}, video=False) as peer:
            await peer.wait_audio_frames(10)
            client = SimpleUDPClient("127.0.0.1", osc.port)
            for _ in range(30):
                client.send_message("/param/frequency", 50_000.0)
            # each value is refused or coalesced into a later one (OSC sends the latest)
            await wait_until(lambda: osc.counts.refused + osc.counts.coalesced == 30, timeout=10)
            assert osc.counts.refused >= 1
    lines = [r.getMessage() for r in caplog.records if "OSC /param/frequency" in r.getMessage()]
    assert len(lines) == 1, lines
