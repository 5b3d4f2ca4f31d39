"""The loss lab (tests/helpers/losslab.py): the cloud app in a network namespace, its hop
impaired for real. These tests check the lab itself and that media crosses an impaired hop;
what loss does to the stream is measured by benchmarks/lossy_hop.py. Skipped unless root
with network namespaces and netem or NFQUEUE (+ the NetfilterQueue package)."""

from __future__ import annotations

import asyncio
import subprocess
import time

import httpx
import pytest

from scope_relay.local.cloud_link.target import CloudTarget
from scope_relay.local.server import RelayConfig, create_relay_app
from scope_relay.rtc.ice import loopback_candidates
from scope_relay.util.serve import serve

from helpers.losslab import LossLab, lab_namespaces
from helpers.peers import BrowserPeer


@pytest.fixture
def lab_ok(monkeypatch):
    reason = LossLab.unavailable()
    if reason:
        pytest.skip(reason)
    # the cloud hop crosses the veth, so it must not be restricted to 127.0.0.1 (the
    # browser hop is restricted per peer below instead)
    monkeypatch.delenv("SCOPE_RELAY_ICE_LOOPBACK", raising=False)


def _link_exists(name: str) -> bool:
    return subprocess.run(["ip", "link", "show", name], capture_output=True).returncode == 0


def _lost_audio_ms(stats: dict) -> float:
    """Audio the relay could not play: holes it filled with silence, and late audio."""
    return stats["audio_gap_ms"] + stats["audio_late_ms"] + stats.get("audio_reset_ms", 0.0)


async def test_media_crosses_a_lossy_cloud_hop_and_losses_are_recovered(lab_ok):
    with LossLab() as lab:
        ns, veth = lab.ns, lab.veth_root
        assert ns in lab_namespaces()
        relay_app = create_relay_app(RelayConfig(CloudTarget(lab.ws_url), loopback_ice=True))
        async with serve(relay_app) as relay, \
                httpx.AsyncClient(base_url=relay.url, timeout=10) as http:
            assert not CloudTarget(lab.ws_url).is_loopback
            peer = BrowserPeer()
            try:
                with loopback_candidates():  # the receiver's own hop stays on 127.0.0.1
                    response = await peer.connect_relay(relay.url, {"pipeline_ids": ["av-sync"]})
                assert response.status_code == 200, response.text
                await peer.wait_audio_frames(25, timeout=45)
                await peer.wait_video_frames(12, timeout=20)

                async def relay_stats() -> dict:
                    return (await http.get(f"/api/v1/webrtc/offer/{peer.session_id}")).json()

                before, started = await relay_stats(), time.monotonic()
                lab.set(loss=0.05)
                # 5 % of ~75 packets a second: 20 drops take ~5 s
                deadline = time.monotonic() + 40
                while lab.stats()["down"]["dropped"] < 20 and time.monotonic() < deadline:
                    await asyncio.sleep(0.5)
                lab.clear()
                impaired_ms = (time.monotonic() - started) * 1000
                down = lab.stats()["down"]
                assert down["dropped"] >= 20, down
                await peer.wait_audio_frames(25, timeout=20)  # still playing afterwards
                await peer.wait_video_frames(12, timeout=20)
                after = await relay_stats()
                receive = after["receive"]["audio"]
                # losses were asked for again and mostly came back (NACK), the rest were
                # concealed; what could not be played stays a small part of the time
                assert receive["nacks_sent"] >= 1 and receive["retransmitted"] >= 1, receive
                lost = _lost_audio_ms(after) - _lost_audio_ms(before)
                assert lost <= 0.03 * impaired_ms, (lost, impaired_ms, receive)
                assert after["receive"]["video"]["nacks_sent"] >= 1, after["receive"]
            finally:
                await peer.close()
    assert ns not in lab_namespaces()
    assert not _link_exists(veth)


async def test_lab_controls_the_cloud_and_always_cleans_up(lab_ok):
    with pytest.raises(RuntimeError, match="on purpose"), LossLab() as lab:
        ns, veth = lab.ns, lab.veth_root
        async with httpx.AsyncClient(base_url=lab.http_url, timeout=5) as http:
            assert (await http.get("/health")).status_code == 200
            lab.freeze_cloud()
            with pytest.raises(httpx.TimeoutException):
                await http.get("/health", timeout=1)
            lab.thaw_cloud()
            assert (await http.get("/health")).status_code == 200
            lab.kill_cloud()
            with pytest.raises(httpx.ConnectError):
                await http.get("/health")
            await asyncio.to_thread(lab.start_cloud)  # same address again
            assert (await http.get("/health")).status_code == 200
            assert lab.cloud_starts == 2
        lab.set(loss=0.5, jitter_ms=10)  # changes apply while running
        raise RuntimeError("on purpose")
    assert ns not in lab_namespaces()
    assert not _link_exists(veth)


async def test_hop_is_rebuilt_when_media_stops_and_plays_again(lab_ok):
    """Every packet from the cloud dropped (ICE consent would notice only after ~30 s): the
    relay's media watchdog rebuilds the hop, and media returns once packets flow again."""
    with LossLab() as lab:
        relay_app = create_relay_app(RelayConfig(CloudTarget(lab.ws_url), loopback_ice=True))
        async with serve(relay_app) as relay, \
                httpx.AsyncClient(base_url=relay.url, timeout=10) as http:
            peer = BrowserPeer()
            try:
                with loopback_candidates():
                    response = await peer.connect_relay(relay.url, {"pipeline_ids": ["test-tone"]})
                assert response.status_code == 200, response.text
                await peer.wait_audio_frames(25, timeout=45)

                async def relay_stats() -> dict:
                    return (await http.get(f"/api/v1/webrtc/offer/{peer.session_id}")).json()

                lab.set(loss=1.0)
                deadline = time.monotonic() + 15
                while (await relay_stats())["media_timeouts"] < 1:
                    assert time.monotonic() < deadline, "the watchdog never fired"
                    await asyncio.sleep(0.25)
                lab.clear()
                deadline = time.monotonic() + 20
                while (stats := await relay_stats())["cloud_reconnects"] < 1:
                    assert time.monotonic() < deadline, stats
                    await asyncio.sleep(0.25)
                received = stats["audio_frames_in"]
                while (await relay_stats())["audio_frames_in"] < received + 50:
                    assert time.monotonic() < deadline, "no media after the rebuild"
                    await asyncio.sleep(0.25)
            finally:
                await peer.close()
