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

from scope_relay.local.cloud_target import CloudTarget
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


async def test_media_crosses_a_lossy_cloud_hop(lab_ok):
    with LossLab(loss=0.01) as lab:
        ns, veth = lab.ns, lab.veth_root
        assert ns in lab_namespaces()
        relay_app = create_relay_app(RelayConfig(CloudTarget(lab.ws_url), loopback_ice=True))
        async with serve(relay_app) as relay:
            assert not CloudTarget(lab.ws_url).is_loopback
            peer = BrowserPeer()
            try:
                with loopback_candidates():  # the receiver's own hop stays on 127.0.0.1
                    response = await peer.connect_relay(relay.url, {"pipeline_ids": ["av-sync"]})
                assert response.status_code == 200, response.text
                await peer.wait_audio_frames(25, timeout=45)
                await peer.wait_video_frames(12, timeout=20)
                # media keeps flowing through the impaired hop until the lab has dropped
                # something (1 % of ~75 packets a second: a drop within 30 s is certain)
                deadline = time.monotonic() + 30
                while lab.stats()["down"]["dropped"] < 1 and time.monotonic() < deadline:
                    await asyncio.sleep(0.5)
                down = lab.stats()["down"]
                assert down["dropped"] >= 1, down
                assert down["seen"] > 100 * down["dropped"] / 10, down  # ~1 %, generously
                await peer.wait_audio_frames(25, timeout=20)
                await peer.wait_video_frames(12, timeout=20)
                async with httpx.AsyncClient(base_url=relay.url, timeout=10) as http:
                    stats = (await http.get(f"/api/v1/webrtc/offer/{peer.session_id}")).json()
                assert stats["audio_frames_in"] > 50, stats
                assert stats["video_frames_in"] > 24, stats
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
