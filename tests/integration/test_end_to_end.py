"""Walking skeleton: real cloud app -> real relay -> an aiortc peer standing in for the page."""

from __future__ import annotations

import asyncio
import contextlib

import httpx
import numpy as np
import pytest

from scope_relay.cloud.app import STATE_KEY
from scope_relay.local.playout.frame_processor import MAX_JITTER
from scope_relay.local.server import RELAY_KEY
from scope_relay.testing import SyntheticCamera, dominant_frequency

from helpers.peers import beep_frequencies, connected, media_sections
from helpers.servers import cloud_server, relay_server

#: A steady stream on loopback plays at most a few 20 ms slots as silence: measured 0
#: in every run here over ~5 s of av-sync; the bound leaves room for a loaded 2-core box.
MAX_UNDERRUNS = 5


def solid_camera(rgb: tuple[int, int, int]) -> SyntheticCamera:
    """A 320x240 camera showing one colour, at 30 fps."""
    return SyntheticCamera(np.full((240, 320, 3), rgb, np.uint8))


async def test_test_tone_frequency_and_live_change(stack):
    _, relay = stack
    async with connected(relay.url, {"pipeline_ids": ["test-tone"], "frequency": 1000,
                                     "interval": 0.5, "duration": 0.3}, video=False) as peer:
        await peer.wait_audio_frames(60)
        assert peer.received.audio_rates == {48000}
        assert peer.received.audio_layouts == {"stereo"}
        audio = peer.received.audio_array()
        beeps = beep_frequencies(peer.received.audio)
        assert beeps, "no beep received"
        assert beeps[0] == pytest.approx(1000, rel=0.01)
        # mono is duplicated to stereo (Opus is lossy, so compare within a few LSB)
        assert np.abs(audio[0].astype(int) - audio[1].astype(int)).max() < 64

        await peer.send_parameters({"frequency": 1500})
        mark = len(peer.received.audio)
        await peer.wait_audio_frames(100)
        beeps = beep_frequencies(peer.received.audio[mark + 30:])
        assert beeps, "no beep after the change"
        assert beeps[-1] == pytest.approx(1500, rel=0.01)


async def test_av_sync_flashes_and_clicks_once_per_second(stack):
    _, relay = stack
    async with connected(relay.url, {"pipeline_ids": ["av-sync"]}) as peer:
        await asyncio.gather(peer.wait_audio_frames(200, timeout=30),
                             peer.wait_video_frames(90, timeout=30))
        seen = list(peer.received.video_brightness)  # (frames keep arriving meanwhile)
        brightness = np.array([b for _, b in seen])
        video_pts = [p for p, _ in seen]
        pts = np.array(video_pts) / 90000
        flashes = pts[1:][(brightness[1:] > 128) & (brightness[:-1] <= 128)]
        assert len(flashes) >= 2
        np.testing.assert_allclose(np.diff(flashes), 1.0, atol=0.05)

        mono = np.abs(peer.received.audio_array()[0].astype(np.int32))
        loud = np.flatnonzero(mono > 8000)
        onsets = loud[np.insert(np.diff(loud) > 4800, 0, True)] / 48000
        assert len(onsets) >= 3
        np.testing.assert_allclose(np.diff(onsets), 1.0, atol=0.005)

        async with httpx.AsyncClient(base_url=relay.url) as http:
            stats = (await http.get("/api/v1/stats")).json()["sessions"][0]
            metrics = (await http.get("/metrics")).text
        assert stats["timing"] == {"video": "sender-report", "audio": "sender-report"}
        assert stats["offset_ms"] is not None
        assert 0 <= stats["audio_underruns"] <= MAX_UNDERRUNS, stats
        assert "scope_relay_audio_queue_ms" in metrics and "scope_relay_sessions 1.0" in metrics
        numeric = [k for k, v in stats.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool)]
        assert "audio_late_ms" in numeric and "camera_frames_dropped" in numeric
        missing = [k for k in numeric if f"scope_relay_{k}{{" not in metrics]
        assert not missing, missing  # every counted drop is on /metrics too

        # Lip sync as the browser would judge it: both tracks mapped to the sender's clock
        # through its RTCP sender reports (the relay's one timeline).
        video_tap, audio_tap = peer.taps["video"], peer.taps["audio"]
        assert video_tap.synced and audio_tap.synced
        flash_times = [video_tap.best_time(p) for p, b, prev in zip(
            video_pts[1:], brightness[1:], brightness[:-1], strict=True)
            if b > 128 and prev <= 128]
        first_pts = peer.received.audio_pts[0]
        click_times = [audio_tap.best_time(first_pts + int(o * 48000)) for o in onsets]
        # Only flashes the received audio covers can have a click: the page may show the
        # first picture a moment before the first sound arrives.
        audio_start = audio_tap.best_time(first_pts)
        audio_end = audio_tap.best_time(first_pts + mono.size)
        covered = [f for f in flash_times if audio_start + 0.05 < f < audio_end - 0.05]
        assert len(covered) >= 2, (flash_times, audio_start, audio_end)
        offsets = [min((c - f for c in click_times), key=abs) for f in covered]
        # Measured ~1 ms here; the bound leaves room for a loaded 2-core machine.
        assert max(abs(o) for o in offsets) < 0.025, offsets


async def test_passthrough_returns_camera_frames(stack):
    _, relay = stack
    async with connected(relay.url, {"pipeline_ids": ["passthrough"]}, audio=False,
                         camera=solid_camera((200, 30, 40))) as peer:
        await peer.wait_video_frames(20, timeout=30)
        colours = np.array([c for _, c in peer.received.video[-10:]])
        np.testing.assert_allclose(colours.mean(axis=0), (200, 30, 40), atol=12)
        assert media_sections(peer.answer_sdp)["video"] == "sendrecv"


async def test_bursty_pipeline_plays_through_and_follows_prompts(stack):
    """2 s of A/V per call after a generation delay: the playout delay absorbs the bursts
    and a prompt change reaches both picture and sound."""
    from scope_relay.cloud.builtin_pipelines.signals import prompt_seed

    first, second = "a calm blue sea", "a neon city at night"
    assert prompt_seed({"prompts": [{"text": first}]}) % 24 != prompt_seed(
        {"prompts": [{"text": second}]}) % 24
    cloud, relay = stack
    async with connected(relay.url, {"pipeline_ids": ["bursty-av"], "generation_delay": 1.0,
                                     "prompts": [{"text": first, "weight": 1.0}]}) as peer:
        await asyncio.gather(peer.wait_audio_frames(100, timeout=30),
                             peer.wait_video_frames(24, timeout=30))
        before_audio = peer.received.audio_array()[0, -48000:]
        before_colour = peer.received.video[-1][1]
        await peer.send_parameters({"prompts": [{"text": second, "weight": 1.0}]})
        await peer.wait_audio_frames(250, timeout=30)  # past the chunk already generated
        after_audio = peer.received.audio_array()[0, -48000:]
        after_colour = peer.received.video[-1][1]
        before_hz = dominant_frequency(before_audio, 48000)
        assert abs(before_hz - dominant_frequency(after_audio, 48000)) > 5
        assert np.abs(before_colour - after_colour).max() > 10
        # the runner learned how long a call takes and started each one early enough
        (session,) = cloud.app[STATE_KEY].sessions.values()
        assert session.buffer.counts.underruns == 0, session.stats()


async def test_cloud_hop_failure_reconnects_and_keeps_parameters(stack):
    """aiortc has no ICE restart: the relay builds a new cloud peer connection, the browser
    hop stays up, and the parameters changed so far survive."""
    cloud, relay = stack
    async with connected(relay.url, {"pipeline_ids": ["test-tone"], "interval": 0.5,
                                     "duration": 0.3}, video=False) as peer:
        await peer.send_parameters({"frequency": 1500})
        await peer.wait_audio_frames(40)
        (session,) = relay.app[RELAY_KEY].sessions.values()
        first_cloud_session = session.cloud.session_id
        old_client = session.cloud
        await cloud.app[STATE_KEY].close_session(first_cloud_session)  # the cloud hop dies
        await asyncio.wait_for(old_client.failed.wait(), 10)
        await peer.send_parameters({"frequency": 2000})  # changed while the hop is down
        mark = len(peer.received.audio)
        await peer.wait_audio_frames(150, timeout=30)  # the browser track never stopped
        assert session.cloud_reconnects == 1
        assert session.cloud.session_id != first_cloud_session
        assert list(cloud.app[STATE_KEY].sessions) == [session.cloud.session_id]
        beeps = beep_frequencies(peer.received.audio[mark + 60:])
        assert beeps, "no audio after reconnecting"
        assert beeps[-1] == pytest.approx(2000, rel=0.01)
        # Stale audio from the outage (a new peer connection and its first sender report
        # take > 0.5 s) is dropped, not absorbed; jitter on a loaded box may add a little.
        assert session.processor.extra_delay < MAX_JITTER, session.processor.stats()


async def test_relay_survives_a_cloud_app_restart():
    """The cloud app goes away entirely (a restart, a redeploy) and comes back at the same
    address: the relay's control socket reconnects and waits for `ready`, the session gets a
    new cloud hop with the parameters set so far, and the browser track never stops."""
    async with contextlib.AsyncExitStack() as second_cloud:
        first_cloud = contextlib.AsyncExitStack()
        cloud = await first_cloud.enter_async_context(cloud_server())
        port = int(cloud.url.rsplit(":", 1)[1])
        try:
            async with relay_server(cloud) as relay, connected(
                    relay.url, {"pipeline_ids": ["test-tone"], "interval": 0.5},
                    video=False) as peer:
                await peer.send_parameters({"frequency": 1500})
                await peer.wait_audio_frames(40)
                (session,) = relay.app[RELAY_KEY].sessions.values()
                await first_cloud.aclose()  # the whole cloud app stops ...
                await asyncio.wait_for(session.cloud.failed.wait(), 30)
                restarted = await second_cloud.enter_async_context(  # ... and comes back
                    cloud_server(port=port))
                mark = len(peer.received.audio)
                await peer.wait_audio_frames(mark + 150, timeout=60)
                assert session.cloud_reconnects == 1
                assert relay.app[RELAY_KEY].connection.connects == 2
                assert list(restarted.app[STATE_KEY].sessions) == [session.cloud.session_id]
                beeps = beep_frequencies(peer.received.audio[mark + 60:])
                assert beeps, "no audio from the restarted cloud app"
                assert beeps[-1] == pytest.approx(1500, rel=0.01)
        finally:
            await first_cloud.aclose()


async def test_camera_keeps_flowing_after_a_cloud_hop_reconnect(stack):
    """aiortc stops a sender's track when its connection closes: the new cloud hop must still
    get the browser's camera (and nothing may pile up while it reconnects)."""
    cloud, relay = stack
    async with connected(relay.url, {"pipeline_ids": ["passthrough"]}, audio=False,
                         camera=solid_camera((30, 200, 40))) as peer:
        await peer.wait_video_frames(10, timeout=30)
        (session,) = relay.app[RELAY_KEY].sessions.values()
        old_client = session.cloud
        await cloud.app[STATE_KEY].close_session(old_client.session_id)
        await asyncio.wait_for(old_client.failed.wait(), 10)
        mark = len(peer.received.video)
        await peer.wait_video_frames(mark + 30, timeout=30)
        assert session.cloud_reconnects == 1 and session.cloud is not old_client
        (cloud_session,) = cloud.app[STATE_KEY].sessions.values()
        assert cloud_session.runner.inputs is not None
        colours = np.array([c for _, c in peer.received.video[-10:]])
        np.testing.assert_allclose(colours.mean(axis=0), (30, 200, 40), atol=12)
        assert session.camera is not None and session.camera.readyState == "live"
