"""The page's performance controls in Debian's real Chromium: Record (an MP4 from the relay),
Pause / Resume, Share (a receive-only viewer page) and the microphone into a pipeline that
accepts audio (Chromium's fake capture device: a beep). One browser for the module; each
test its own cloud app and relay on 127.0.0.1.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from scope_relay.cloud.app import STATE_KEY
from scope_relay.local.server import RELAY_KEY

from helpers.chromium import STATE, needs_chromium, page_at, start_pipeline
from helpers.servers import cloud_server, relay_server
from helpers.waiting import wait_until

pytestmark = [
    pytest.mark.browser,
    needs_chromium,
    pytest.mark.asyncio(loop_scope="module"),
]


# What the page asks getUserMedia for, and the settings of the tracks it gets.
SPY_ON_CAPTURE = """(() => {
    const md = navigator.mediaDevices, real = md.getUserMedia.bind(md);
    window._capture = [];
    md.getUserMedia = async (constraints) => {
        const stream = await real(constraints);
        window._capture.push({constraints,
                              settings: stream.getTracks().map(t => ({kind: t.kind, ...t.getSettings()}))});
        return stream;
    };
})()"""


async def session_stats(relay, session_id: str) -> dict:
    async with httpx.AsyncClient(base_url=relay.url) as http:
        reply = await http.get(f"/api/v1/webrtc/offer/{session_id}")
        reply.raise_for_status()
        return reply.json()


async def test_record_gives_an_mp4_with_h264_and_aac(browser, tmp_path: Path):
    import av

    async with cloud_server() as cloud, relay_server(cloud) as relay:
        async with page_at(browser, relay.url) as page:
            await start_pipeline(page, "av-sync")
            await page.wait_for_selector("#record:enabled", timeout=10_000)
            await page.click("#record")
            await page.wait_for_function(
                "scopeRelay.recording.state === 'recording' && scopeRelay.recording.elapsed >= 2",
                timeout=15_000)
            assert await page.is_visible("#record-elapsed")
            assert (await page.text_content("#record-elapsed")).startswith("● 0:0")
            assert await page.text_content("#record span") == "Stop recording"
            await page.click("#record")
            await page.wait_for_selector("#record-link", state="visible", timeout=15_000)
            assert await page.evaluate("scopeRelay.recording.error") is None
            assert not await page.is_visible("#record-elapsed")
            href = await page.get_attribute("#record-link", "href")
            assert href and "/api/v1/recordings/" in href
            # the download as the page itself gets it (same origin)
            reply = await page.request.get(await page.evaluate(
                "document.querySelector('#record-link').href"))
            assert reply.ok, reply.status
            assert reply.headers["content-type"] == "video/mp4"
            assert ".mp4" in reply.headers["content-disposition"]
            path = tmp_path / "recording.mp4"
            path.write_bytes(await reply.body())
            with av.open(str(path)) as container:
                (video,) = container.streams.video
                (audio,) = container.streams.audio
                assert video.codec_context.name == "h264"
                assert audio.codec_context.name == "aac"
                assert container.duration is not None
                duration = container.duration / av.time_base
            assert duration >= 1.5, duration
            assert page.errors == []


async def test_pause_and_resume_reach_the_relay_and_the_badge(browser):
    async with cloud_server() as cloud, relay_server(cloud) as relay:
        async with page_at(browser, relay.url) as page:
            session_id = await start_pipeline(page, "av-sync")
            assert await page.is_enabled("#pause")
            await page.click("#pause")
            await page.wait_for_function(STATE.format("paused"), timeout=10_000)
            assert await page.text_content("#state-title") == "Paused"
            assert await page.get_attribute("#pause", "aria-pressed") == "true"
            assert await page.text_content("#pause span") == "Resume"
            assert (await session_stats(relay, session_id))["paused"] is True
            (cloud_session,) = cloud.app[STATE_KEY].sessions.values()
            await wait_until(lambda: cloud_session.stats().get("paused") is True, timeout=10)
            # the media already made plays out, then the picture holds: still "Paused",
            # never "Stalled"
            await page.wait_for_function(
                "scopeRelay.figures && scopeRelay.figures.mediaAgeMs > 2500", timeout=15_000)
            assert await page.evaluate("scopeRelay.state.id") == "paused"

            await page.keyboard.press(".")  # the shortcut resumes
            await page.wait_for_function(STATE.format("playing"), timeout=20_000)
            # the generator's speed is measured afresh after the pause: the held stretch
            # never reads as "slower than real time" (it did, for 9 s, before the fix)
            await page.evaluate("window._states = new Set(); window._watch = setInterval("
                                "() => _states.add(scopeRelay.state.id), 100)")
            await page.wait_for_function("scopeRelay.figures?.speed != null", timeout=20_000)
            assert await page.evaluate("clearInterval(_watch), [..._states]") == ["playing"]
            # (a window holding the pause reads 0.3-0.6; a loaded 2-core box reads 0.83-0.93
            # for any fresh session, so the bound is below that)
            assert await page.evaluate("scopeRelay.figures.speed") > 0.8
            assert await page.get_attribute("#pause", "aria-pressed") == "false"
            assert await page.text_content("#pause span") == "Pause"
            assert (await session_stats(relay, session_id))["paused"] is False
            await wait_until(lambda: cloud_session.stats().get("paused") is False, timeout=10)
            assert page.errors == []


async def test_share_opens_a_viewer_that_plays_without_a_second_cloud_session(browser):
    async with cloud_server() as cloud, relay_server(cloud) as relay:
        async with page_at(browser, relay.url) as page:
            session_id = await start_pipeline(page, "av-sync")
            await page.wait_for_selector("#share:enabled", timeout=10_000)
            share_url = (await session_stats(relay, session_id))["shareUrl"]
            await browser.grant_permissions(["clipboard-read", "clipboard-write"], origin=relay.url)
            async with browser.expect_page(timeout=10_000) as opened:
                await page.click("#share")
            viewer = await opened.value
            await page.bring_to_front()
            assert await page.evaluate("navigator.clipboard.readText()") == share_url  # copied
            await viewer.bring_to_front()
            try:
                await viewer.wait_for_load_state()
                assert viewer.url == share_url
                assert "/viewer#" in viewer.url
                await viewer.wait_for_function(
                    "scopeRelayViewer.facts.state === 'playing'", timeout=20_000)
                await viewer.wait_for_function(
                    "(v => v.videoWidth > 0 && v.currentTime > 0.5)(document.querySelector('video'))",
                    timeout=20_000)
                t0 = await viewer.evaluate("document.querySelector('video').currentTime")
                await viewer.wait_for_function(
                    f"document.querySelector('video').currentTime > {t0} + 0.5", timeout=10_000)
                # output only: no controls, no cursor, nothing said over the picture
                assert await viewer.evaluate("document.querySelectorAll('button, select, input').length") == 0
                assert await viewer.evaluate("getComputedStyle(document.body).cursor") == "none"
                assert await viewer.is_hidden("#note")
                # one generation for both: one relay session (with one viewer), one cloud session
                async with httpx.AsyncClient(base_url=relay.url) as http:
                    sessions = (await http.get("/api/v1/stats")).json()["sessions"]
                assert [s["session"] for s in sessions] == [session_id[:8]]
                assert sessions[0]["viewers"] == 1
                assert len(cloud.app[STATE_KEY].sessions) == 1
                # a click goes fullscreen and unmutes
                await viewer.click("video")
                await viewer.wait_for_function("document.fullscreenElement !== null", timeout=5_000)
                assert await viewer.evaluate("document.querySelector('video').muted") is False
                # the owner stops: the viewer says so
                await page.click("#stop")
                await viewer.wait_for_function("scopeRelayViewer.facts.state === 'ended'",
                                               timeout=15_000)
            finally:
                await viewer.close()
            assert page.errors == []


async def test_microphone_goes_up_to_voice_fx_and_its_sound_comes_back(browser):
    async with cloud_server() as cloud, relay_server(cloud) as relay:
        async with page_at(browser, relay.url, SPY_ON_CAPTURE) as page:
            await page.select_option("#pipeline", "voice-fx")
            assert await page.is_visible("#echo-field")
            assert await page.is_checked("#echo")
            session_id = await start_pipeline(page, "voice-fx")
            # one prompt, for the microphone only, with the browser's echo cancellation on
            (capture,) = await page.evaluate("window._capture")
            assert capture["constraints"] == {"video": False, "audio": {"echoCancellation": True}}
            (mic,) = capture["settings"]
            assert mic["kind"] == "audio" and mic["echoCancellation"] is True
            sdp = await page.evaluate("scopeRelay.localSdp")
            assert "m=audio" in sdp and "a=sendrecv" in sdp and "m=video" not in sdp
            assert await page.evaluate(
                "document.querySelector('#video').srcObject.getTracks().map(t => t.kind)") == ["audio"]
            # the fake microphone (a beep) reaches the relay and is forwarded to the cloud
            session = relay.app[RELAY_KEY].sessions[session_id]
            await wait_until(lambda: session.microphone is not None
                             and session.microphone.forwarded >= 100, timeout=20)
            stats = await session_stats(relay, session_id)
            assert stats["accepts_audio"] is True
            # (a few frames queue up and are dropped while the cloud hop's sender starts)
            assert stats["microphone_frames_dropped"] < session.microphone.forwarded / 4
            (cloud_session,) = cloud.app[STATE_KEY].sessions.values()
            assert cloud_session.input_audio is not None
            # ... and the pipeline's output (the processed beep) plays on the page
            await page.wait_for_function("Math.max(...scopeRelay.levels) > 0.05", timeout=20_000,
                                         polling=50)
            assert page.errors == []
