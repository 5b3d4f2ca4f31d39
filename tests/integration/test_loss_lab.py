"""The loss lab (tests/helpers/losslab.py): the cloud app in a network namespace, its hop
impaired for real. These tests check the lab itself and that media crosses an impaired hop;
what loss does to the stream is measured by benchmarks/lossy_hop.py. Skipped unless root
with network namespaces and netem or NFQUEUE (+ the NetfilterQueue package)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time

import httpx
import pytest

from scope_relay.local.cloud_link.target import CloudTarget

from helpers.lab_relay import relay_session
from helpers.losslab import Impairment, LossLab, lab_namespaces


@pytest.fixture
def lab_ok(monkeypatch):
    reason = LossLab.unavailable()
    if reason:
        pytest.skip(reason)
    # the cloud hop crosses the veth, so it must not be restricted to 127.0.0.1 (the
    # browser hop is restricted per peer below instead)
    monkeypatch.delenv("SCOPE_RELAY_ICE_LOOPBACK", raising=False)


#: long profiles: run with SCOPE_RELAY_SLOW=1 (the benchmark measures them all)
slow = pytest.mark.skipif(not os.environ.get("SCOPE_RELAY_SLOW"),
                          reason="a slow loss-lab profile (SCOPE_RELAY_SLOW=1 runs it)")
#: a path with a round trip: 40 ms each way, a little jitter, in order
ONE_WAY = Impairment(delay_ms=40, jitter_ms=3, reorder=False)
TONE = {"pipeline_ids": ["test-tone"], "interval": 1.0, "duration": 1.0, "volume": 0.5}


def _link_exists(name: str) -> bool:
    return subprocess.run(["ip", "link", "show", name], capture_output=True).returncode == 0


def _lost_audio_ms(stats: dict) -> float:
    """Audio the relay could not play: holes it filled with silence, and late audio."""
    return stats["audio_gap_ms"] + stats["audio_late_ms"] + stats.get("audio_reset_ms", 0.0)


async def test_media_crosses_a_lossy_cloud_hop_and_losses_are_recovered(lab_ok):
    with LossLab() as lab:
        ns, veth = lab.ns, lab.veth_root
        assert ns in lab_namespaces()
        assert not CloudTarget(lab.ws_url).is_loopback
        async with relay_session(lab, {"pipeline_ids": ["av-sync"]}, video_frames=12) as (peer, relay_stats):
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
        async with relay_session(lab, {"pipeline_ids": ["test-tone"]}) as (peer, relay_stats):
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


async def _wait_drops(lab: LossLab, drops: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while lab.stats()["down"]["dropped"] < drops:
        assert time.monotonic() < deadline, lab.stats()
        await asyncio.sleep(0.25)


async def test_round_trip_loss_is_rebuilt_in_time_while_the_delay_makes_room(lab_ok):
    """80 ms round trip, 5 % loss on a continuous tone. A hole whose retransmission cannot
    come back before its playout deadline is rebuilt at once (the sender's FEC, switched on
    by the receiver's NACKs, or concealment), so nothing behind it plays late; the relay
    measures the round trip and, while the loss lasts, raises its delay by what
    retransmission needs."""
    with LossLab(delay_ms=40, jitter_ms=3, reorder=False, upstream=ONE_WAY) as lab:
        async with relay_session(lab, TONE, video=False, audio_frames=50) as (peer, relay_stats):
            before, started = await relay_stats(), time.monotonic()
            lab.set(loss=0.05)
            await _wait_drops(lab, 30, timeout=60)  # 5 % of 50 packets a second: ~12 s
            during = await relay_stats()
            lab.set(loss=0.0)
            impaired_ms = (time.monotonic() - started) * 1000
            await peer.wait_audio_frames(25, timeout=20)  # still playing afterwards
            after = await relay_stats()
            receive = after["receive"]["audio"]
            assert 60 <= receive["rtt_ms"] <= 300, receive  # measured, not the 30 ms guess
            # with room made, most holes came back by retransmission; the rest were
            # rebuilt (FEC, on since the first NACK) or concealed
            assert receive["lost"] + receive["retransmitted"] >= 20, receive
            assert receive["retransmitted"] >= receive["lost"], receive
            assert during["loss_room_ms"] > 0 and after["loss_room_raises"] >= 1, during
            # what could not be played stays small (a loose bound: on a loaded 2-core
            # machine the cloud's own clock stalls too; benchmarks/lossy_hop.py measures)
            lost = _lost_audio_ms(after) - _lost_audio_ms(before)
            figures = {k: (before[k], during[k], after[k]) for k in (
                "audio_gap_ms", "audio_late_ms", "loss_room_ms", "extra_delay_ms",
                "hold_budget_ms", "offset_ms")}
            assert lost <= 0.1 * impaired_ms, (lost, impaired_ms, receive, figures)


async def test_a_ceiling_above_the_streams_rate_costs_no_audio(lab_ok):
    """A 2 Mb/s bottleneck with a 200 ms drop-tail queue on the cloud -> relay direction
    (av-sync sends ~100 kb/s): audio and video pass, nothing is dropped at the queue,
    little audio is lost. (A ceiling *below* the stream's rate: the test after this one.)"""
    with LossLab(delay_ms=20, upstream=Impairment(delay_ms=20)) as lab:
        async with relay_session(lab, {"pipeline_ids": ["av-sync"]}, video_frames=12) as (peer, relay_stats):
            before, started = await relay_stats(), time.monotonic()
            lab.set(rate_kbps=2000, queue_ms=200)
            seen = lab.stats()["down"]["seen"]
            deadline = time.monotonic() + 30
            while lab.stats()["down"]["seen"] < seen + 400:  # ~5 s of both tracks
                assert time.monotonic() < deadline, lab.stats()
                await asyncio.sleep(0.25)
            frames = (await relay_stats())["video_frames_in"]
            await peer.wait_video_frames(12, timeout=20)
            lab.set(rate_kbps=0)
            impaired_ms = (time.monotonic() - started) * 1000
            after = await relay_stats()
            assert after["video_frames_in"] > frames
            assert lab.stats()["down"]["queue_dropped"] == 0, lab.stats()
            # loose, as above: the loaded machine's own stalls count here too (a clean
            # path lost up to 11 % in benchmarks/lossy_hop.py at load 7-12)
            lost = _lost_audio_ms(after) - _lost_audio_ms(before)
            assert lost <= 0.1 * impaired_ms, (lost, impaired_ms)


#: a tone and 1280x720 at 15 fps (~1.7 Mb/s of VP8 at its ceiling)
HD15 = {"pipeline_ids": ["test-tone", "hd-test"], "interval": 1.0, "duration": 1.0,
        "volume": 0.5, "height": 720, "frame_rate": 15.0}


async def test_a_ceiling_below_the_streams_rate_lowers_the_video_and_spares_the_audio(lab_ok):
    """720p15 through a 1 Mb/s bottleneck with a 200 ms drop-tail queue from the start (20
    ms each way): the cloud's video follows its bandwidth estimate under the ceiling, paced
    (rtc/congestion; the relay's delay-based REMB stops it before the queue fills), so
    video keeps arriving, almost nothing is dropped at the queue and the audio plays.
    Before congestion control, 62 % of the packets were dropped at the queue, no video
    frame arrived in 30 s and 27-29 % of the audio was concealed; with the estimate held at
    the ceiling (a local edit, 2026-12-07) the audio never reached 10 s in 40 s, or the
    target stayed at the ceiling. Bounds leave room for a loaded shared machine (measured
    at load 1-5: 0 packets dropped at the queue, 0 % concealed, 0.2-1 % audio lost);
    benchmarks/lossy_hop.py measures the ceiling profiles."""
    with LossLab(delay_ms=20, upstream=Impairment(delay_ms=20)) as lab:
        lab.set(rate_kbps=1000, queue_ms=200)
        async with relay_session(lab, HD15, audio_frames=50) as (peer, relay_stats):
            await peer.wait_video_frames(5, timeout=30)
            start_stats, start_lab = await relay_stats(), lab.stats()["down"]
            frames, started = len(peer.received.video), time.monotonic()
            await peer.wait_audio_frames(500, timeout=40)  # ~10 s of audio
            elapsed = time.monotonic() - started
            after, down = await relay_stats(), lab.stats()["down"]
            async with httpx.AsyncClient(base_url=lab.http_url, timeout=10) as http:
                sessions = (await http.get("/api/v1/stats")).json()["sessions"]
                sending = [s["video_send"] for s in sessions
                           if "target_bitrate" in s.get("video_send", {})]
                metrics = (await http.get("/metrics")).text
    # (the hop may have been rebuilt meanwhile: ICE consent checks lost at a full queue)
    cloud = max(sending, key=lambda v: v.get("encoded_bytes", 0))
    fps = (len(peer.received.video) - frames) / elapsed
    seen = down["seen"] - start_lab["seen"]
    queue_dropped = down["queue_dropped"] - start_lab["queue_dropped"]
    audio_before, audio_after = start_stats["receive"]["audio"], after["receive"]["audio"]
    concealed = audio_after["concealed_ms"] - audio_before["concealed_ms"]
    lost = _lost_audio_ms(after) - _lost_audio_ms(start_stats)
    figures = {k: cloud.get(k) for k in ("target_bitrate", "estimate_bitrate", "send_bitrate",
                                         "pacer_queue_delay_max_ms", "ladder_step",
                                         "delay_overuses")}
    figures.update(fps=fps, queue_dropped=queue_dropped, seen=seen, concealed_ms=concealed,
                   lost_ms=lost, elapsed=elapsed)
    assert fps >= 5, figures
    assert queue_dropped <= 0.05 * seen, figures  # before congestion control: 62 %
    assert concealed <= 0.03 * elapsed * 1000, figures
    assert lost <= 0.05 * elapsed * 1000, figures
    assert cloud["target_bitrate"] < cloud["ceiling_bitrate"], figures
    assert cloud["pacer_sent_packets"] > 0 and "pacer_queue_delay_ms" in cloud
    assert "scope_cloud_video_send_estimate_bitrate" in metrics
    assert "scope_cloud_video_send_pacer_queue_delay_ms" in metrics


@slow
async def test_a_ten_second_outage_ends_with_media_back_within_two_seconds(lab_ok):
    """Nothing gets through either way for 10 s (the relay's watchdog rebuilds the hop
    meanwhile); once the path is back, audio plays again within 2 s."""
    with LossLab(delay_ms=30, upstream=Impairment(delay_ms=30)) as lab:
        async with relay_session(lab, TONE, video=False, audio_frames=50) as (peer, relay_stats):
            lab.set(loss=1.0)
            lab.set(loss=1.0, direction="up")
            await asyncio.sleep(10.0)  # the outage itself is the test's input, not a wait
            lab.set(loss=0.0)
            lab.set(loss=0.0, direction="up")
            back = time.monotonic()
            received = (await relay_stats())["audio_frames_in"]
            while (await relay_stats())["audio_frames_in"] < received + 25:
                assert time.monotonic() - back < 2.0 + 8.0, "no audio after the outage"
                await asyncio.sleep(0.05)
            took = time.monotonic() - back
            assert took <= 2.0, took


#: frames a second the receiver must still get under ``ceiling-below`` (before the
#: audio's share and the video's yield: 0.3; after: 6.3, benchmarks/lossy_hop.py; the
#: test's shorter window read 1.7-4.6 in five runs on the shared 2-core machine)
CEILING_BELOW_FPS = 1.0


async def _cloud_audio_send(lab: LossLab) -> list[dict]:
    """Every cloud session's ``audio_send`` (the hop may have been rebuilt meanwhile)."""
    async with httpx.AsyncClient(base_url=lab.http_url, timeout=10) as http:
        sessions = (await http.get("/api/v1/stats")).json()["sessions"]
    return [s["audio_send"] for s in sessions if isinstance(s.get("audio_send"), dict)]


async def test_under_a_ceiling_below_the_audio_opus_steps_down_and_the_video_yields(lab_ok):
    """av-sync (clicks and flashes, Opus at 128 kb/s) once it plays, then a 64 kb/s
    bottleneck with a 200 ms drop-tail queue (30 ms each way; the loss lab's
    ``ceiling-below``): the video's estimate goes to its floor, then the cloud's Opus
    steps down in place (rtc/congestion/audio_share.py), and starved at its own floor
    it makes the video yield under its floor, so the video keeps moving. Before:
    ``audio_send`` did not exist, 0.3 fps arrived. The audio concealed is in the figures
    but not bounded: it stays high (docs/loss-lab.md: the retransmissions into the full
    queue and the audio's own header rate, not the codec's, are most of what is left)."""
    with LossLab(delay_ms=30, upstream=Impairment(delay_ms=30)) as lab:
        async with relay_session(lab, {"pipeline_ids": ["av-sync"]},
                                 audio_frames=50) as (peer, relay_stats):
            lab.set(rate_kbps=64, queue_ms=200)
            deadline = time.monotonic() + 30
            stepped: list[dict] = []
            while not stepped:  # polled: the cloud's figures have no event to wait on
                assert time.monotonic() < deadline, await _cloud_audio_send(lab)
                stepped = [a for a in await _cloud_audio_send(lab)
                           if a["bitrate_steps_down"] >= 1 and a["encoder_bitrate"] <= 64_000]
                await asyncio.sleep(0.5)
            await peer.wait_audio_frames(100, timeout=30)  # settle at the new rate (~2 s)
            before, started = await relay_stats(), time.monotonic()
            frames = len(peer.received.video)
            await peer.wait_audio_frames(500, timeout=40)  # ~10 s of audio
            elapsed = time.monotonic() - started
            fps = (len(peer.received.video) - frames) / elapsed
            after, audio_send = await relay_stats(), await _cloud_audio_send(lab)
    concealed = (after["receive"]["audio"]["concealed_ms"]
                 - before["receive"]["audio"]["concealed_ms"])
    figures = {"concealed_ms": concealed, "elapsed": elapsed, "fps": fps,
               "audio_send": audio_send}
    print(figures)
    assert min(a["encoder_bitrate"] for a in audio_send) <= 64_000, figures
    assert fps >= CEILING_BELOW_FPS, figures
    relay_view = after.get("cloud_send") or {}
    if relay_view.get("available"):  # (not when the hop was rebuilt since the relay's read)
        assert relay_view["audio"]["bitrate"] <= 64_000, relay_view
