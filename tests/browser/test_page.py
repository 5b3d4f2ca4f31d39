"""The page in Debian's real Chromium (Playwright, no browser download)."""

from __future__ import annotations

import pytest

from scope_relay.cloud.app import STATE_KEY

from helpers.chromium import needs_chromium
from helpers.servers import cloud_server, relay_server

pytestmark = [
    pytest.mark.browser,
    needs_chromium,
    pytest.mark.asyncio(loop_scope="module"),  # one browser for the module (conftest.py)
]


# Synchronous on purpose: wait_for_function takes a returned Promise as truthy at once.
AUDIO_ENERGY = """() => {
    const v = document.querySelector('#video');
    if (!v.srcObject || v.srcObject.getAudioTracks().length === 0) return false;
    if (window._src !== v.srcObject) {  // a new session brings a new stream
        const ctx = window._ctx || (window._ctx = new AudioContext());
        window._an = ctx.createAnalyser();
        ctx.createMediaStreamSource(v.srcObject).connect(window._an);
        window._src = v.srcObject;
    }
    const buf = new Float32Array(2048); window._an.getFloatTimeDomainData(buf);
    return Math.max(...buf.map(Math.abs)) > 0.05;
}"""


async def start_pipeline(page, url: str, pipeline: str) -> None:
    await page.goto(url + "/")
    await page.wait_for_function("document.querySelector('#pipeline').options.length >= 4",
                                 timeout=20_000)
    await page.select_option("#pipeline", pipeline)
    await page.click("#start")


async def test_av_pipeline_plays_video_and_audio_in_chromium(browser):
    async with cloud_server() as cloud, relay_server(cloud) as relay:
        page = await browser.new_page()
        await start_pipeline(page, relay.url, "av-sync")
        assert await page.eval_on_selector("#video", "v => v.muted") is True  # starts muted
        frames = await page.evaluate("""() => new Promise((resolve, reject) => {
            const v = document.querySelector('#video'); let n = 0;
            const tick = () => { if (++n >= 24) resolve(n); else v.requestVideoFrameCallback(tick); };
            v.requestVideoFrameCallback(tick);
            setTimeout(() => reject(new Error('only ' + n + ' frames')), 20000);
        })""")
        assert frames >= 24
        tracks = await page.evaluate(
            "document.querySelector('#video').srcObject.getTracks().map(t => t.kind).sort()")
        assert tracks == ["audio", "video"]
        assert await page.is_hidden("#audio-only")
        assert await page.evaluate("scopeRelay.localSdp.includes('stereo=1')")
        await page.click("#mute")
        assert await page.eval_on_selector("#video", "v => v.muted") is False
        await page.click("#stop")
        await page.close()


async def test_audio_only_pipeline_shows_indicator_and_has_no_video_track(browser):
    async with cloud_server() as cloud, relay_server(cloud) as relay:
        page = await browser.new_page()
        await start_pipeline(page, relay.url, "test-tone")
        await page.wait_for_function(
            "document.querySelector('#video').srcObject?.getAudioTracks().length === 1",
            timeout=20_000)
        assert await page.is_visible("#audio-only")
        kinds = await page.evaluate(
            "document.querySelector('#video').srcObject.getTracks().map(t => t.kind)")
        assert kinds == ["audio"]
        await page.wait_for_function(AUDIO_ENERGY, timeout=20_000, polling=100)  # sound arrives
        await page.close()




async def test_page_starts_a_new_session_when_the_relay_drops_it(browser):
    """aiortc has no ICE restart, so the page recovers with a new session on the same
    pipeline, carrying the parameters set on the page."""
    import httpx

    async with cloud_server() as cloud, relay_server(cloud) as relay:
        page = await browser.new_page()
        await start_pipeline(page, relay.url, "test-tone")
        await page.fill("#params input[name=frequency]", "1500")
        await page.dispatch_event("#params input[name=frequency]", "change")
        await page.wait_for_function(AUDIO_ENERGY, timeout=20_000, polling=100)
        first = await page.evaluate("scopeRelay.sessionId")
        async with httpx.AsyncClient(base_url=relay.url) as http:
            assert (await http.delete(f"/api/v1/webrtc/offer/{first}")).status_code == 200
            await page.wait_for_function(
                f"scopeRelay.sessionId && scopeRelay.sessionId !== '{first}' "
                "&& scopeRelay.connectionState === 'connected'", timeout=30_000)
            await page.wait_for_function(AUDIO_ENERGY, timeout=20_000, polling=100)
            sessions = (await http.get("/api/v1/stats")).json()["sessions"]
        assert [s["session"] for s in sessions] == [(await page.evaluate("scopeRelay.sessionId"))[:8]]
        assert await page.evaluate("scopeRelay.restarts") == 1
        assert await page.is_disabled("#start") and await page.is_enabled("#stop")
        (cloud_session,) = cloud.app[STATE_KEY].sessions.values()
        assert cloud_session.runner.params["frequency"] == 1500  # the page's setting came back
        await page.close()


async def test_camera_goes_up_and_comes_back_in_chromium(browser):
    """passthrough: Chromium's (fake) camera -> relay -> cloud -> relay -> the page."""
    async with cloud_server() as cloud, relay_server(cloud) as relay:
        page = await browser.new_page()
        await start_pipeline(page, relay.url, "passthrough")
        await page.wait_for_function("scopeRelay.connectionState === 'connected'", timeout=30_000)
        assert await page.evaluate("scopeRelay.cameraTrackState") == "live"
        # frames that came back through both hops carry the camera's picture, not black
        spread = await page.evaluate("""() => new Promise((resolve, reject) => {
            const v = document.querySelector('#video'); let n = 0;
            const c = new OffscreenCanvas(32, 32), g = c.getContext('2d', {willReadFrequently: true});
            const tick = () => {
                if (++n < 24) { v.requestVideoFrameCallback(tick); return; }
                g.drawImage(v, 0, 0, 32, 32);
                const px = g.getImageData(0, 0, 32, 32).data; let lo = 255, hi = 0;
                for (let i = 0; i < px.length; i += 4) {
                    const y = (px[i] + px[i+1] + px[i+2]) / 3;
                    lo = Math.min(lo, y); hi = Math.max(hi, y);
                }
                resolve(hi - lo);
            };
            v.requestVideoFrameCallback(tick);
            setTimeout(() => reject(new Error('only ' + n + ' frames')), 20000);
        })""")
        assert spread > 40, spread
        (session,) = cloud.app[STATE_KEY].sessions.values()
        assert session.runner.inputs is not None and session.stats()["video_frames_sent"] > 0
        await page.click("#stop")
        await page.close()


async def test_page_streams_when_opened_at_localhost(browser):
    """The relay answers only to its own names; localhost is one of them (as 127.0.0.1 is
    for every other page test), and its page's requests pass the same-origin checks."""
    async with cloud_server() as cloud, relay_server(cloud) as relay:
        page = await browser.new_page()
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        await start_pipeline(page, relay.url.replace("127.0.0.1", "localhost"), "test-tone")
        await page.wait_for_function(AUDIO_ENERGY, timeout=20_000, polling=100)
        assert not [e for e in errors if "403" in e or "415" in e], errors
        await page.close()



async def test_chromium_plays_720p_forwarded_from_the_cloud(browser):
    """The page's picture is the cloud's own VP8, passed on by the relay undecoded."""
    import httpx

    async with cloud_server() as cloud, relay_server(cloud) as relay:
        page = await browser.new_page()
        await start_pipeline(page, relay.url, "hd-test")  # 1280x720 at 30 fps by default
        frames = await page.evaluate("""() => new Promise((resolve, reject) => {
            const v = document.querySelector('#video'); let n = 0;
            const tick = () => { if (++n >= 60) resolve(n); else v.requestVideoFrameCallback(tick); };
            v.requestVideoFrameCallback(tick);
            setTimeout(() => reject(new Error('only ' + n + ' frames')), 30000);
        })""")
        assert frames >= 60
        size = await page.evaluate(
            "(() => { const v = document.querySelector('#video'); "
            "return [v.videoWidth, v.videoHeight]; })()")
        assert size == [1280, 720]
        async with httpx.AsyncClient(base_url=relay.url, timeout=10) as http:
            session = (await http.get("/api/v1/stats")).json()["sessions"][0]
        assert session["receive"]["video"]["forwarded_frames"] >= 60
        assert session["receive"]["video"]["decoded_frames"] == 0
        assert session["video_forward"]["frames"] >= 60
        await page.click("#stop")
        await page.close()
