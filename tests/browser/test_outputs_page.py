"""Outputs in Debian's real Chromium: Chromium as a WHEP client (a few lines of JS, its own
WebRTC stack), and the page's Outputs menu (the URLs to paste into a tool, NDI started
and stopped). With ``SCOPE_RELAY_SCREENSHOTS=docs/screenshots`` the menu is saved as
``outputs-menu.png``."""

from __future__ import annotations

import asyncio
import importlib.util
import os
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from scope_relay.local.server import RELAY_KEY

from helpers.chromium import chromium_context, needs_chromium, page_at, start_pipeline
from helpers.peers import connected
from helpers.servers import cloud_server, relay_server
from helpers.waiting import wait_until

pytestmark = [
    pytest.mark.browser,
    needs_chromium,
    pytest.mark.asyncio(loop_scope="module"),
]

SHOTS = os.environ.get("SCOPE_RELAY_SCREENSHOTS")
HAS_NDI = importlib.util.find_spec("NDIlib") is not None

#: A WHEP client: recvonly video + audio, the offer POSTed once gathering completes,
#: the answer applied, then the figures of what Chromium decoded.
WHEP_CLIENT = """async (token) => {
    const pc = new RTCPeerConnection({iceServers: []});
    pc.addTransceiver("video", {direction: "recvonly"});
    pc.addTransceiver("audio", {direction: "recvonly"});
    await pc.setLocalDescription(await pc.createOffer());
    await new Promise((done) => {
        if (pc.iceGatheringState === "complete") return done();
        pc.addEventListener("icegatheringstatechange",
                            () => pc.iceGatheringState === "complete" && done());
    });
    const response = await fetch(`/whep/${token}`, {method: "POST", body: pc.localDescription.sdp,
                                                    headers: {"Content-Type": "application/sdp"}});
    const answer = await response.text();
    await pc.setRemoteDescription({type: "answer", sdp: answer});
    const deadline = performance.now() + 30000;
    let video = {}, audio = {};
    while (performance.now() < deadline) {
        await new Promise((r) => setTimeout(r, 250));
        for (const s of (await pc.getStats()).values()) {
            if (s.type === "inbound-rtp" && s.kind === "video") video = s;
            if (s.type === "inbound-rtp" && s.kind === "audio") audio = s;
        }
        if ((video.framesDecoded || 0) >= 48 && (audio.packetsReceived || 0) >= 50) break;
    }
    const location = response.headers.get("Location");
    const deleted = await fetch(location, {method: "DELETE"});
    pc.close();
    return {status: response.status, location, deleted: deleted.status,
            setup: answer.split("\\r\\n").filter((l) => l.startsWith("a=setup:")),
            framesDecoded: video.framesDecoded || 0, width: video.frameWidth || 0,
            audioPackets: audio.packetsReceived || 0, audioCodec: audio.codecId || ""};
}"""


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser():
    async with chromium_context() as context:
        yield context


async def test_chromium_pulls_a_session_with_whep(browser):
    async with cloud_server() as cloud, relay_server(cloud) as relay, \
            connected(relay.url, {"pipeline_ids": ["av-sync"]}) as owner:
        (session,) = relay.app[RELAY_KEY].sessions.values()
        assert session.audience is not None
        async with page_at(browser, relay.url) as page:  # (the relay's origin: same-origin)
            result = await page.evaluate(WHEP_CLIENT, session.audience.token)
        print("Chromium WHEP client:", result)
        assert result["status"] == 201 and result["deleted"] == 200
        assert result["setup"] == ["a=setup:passive"] * len(result["setup"]) and result["setup"]
        assert result["framesDecoded"] >= 48 and result["width"] == 320
        assert result["audioPackets"] >= 50  # (headless: no audio device pulls samples)
        await wait_until(lambda: not session.audience.viewers)
        assert owner.pc.connectionState == "connected"


async def test_outputs_menu_lists_the_urls_and_starts_ndi(browser):
    async with cloud_server() as cloud, relay_server(cloud) as relay:
        async with page_at(browser, relay.url) as page:
            assert await page.is_hidden("#outputs")
            session_id = await start_pipeline(page, "av-sync")
            await page.wait_for_selector("#outputs", state="visible", timeout=10_000)
            await page.click("#outputs-summary")
            await page.wait_for_function("document.querySelector('#out-ts').textContent",
                                         timeout=10_000)
            session = relay.app[RELAY_KEY].sessions[session_id]
            assert session.audience is not None
            token = session.audience.token
            assert await page.text_content("#out-whep") == f"{relay.url}/whep/{token}"
            assert await page.text_content("#out-ts") == f"{relay.url}/ts/{token}"
            assert await page.text_content("#out-whip") == f"{relay.url}/whip/{session_id}"
            await browser.grant_permissions(["clipboard-read", "clipboard-write"], origin=relay.url)
            await page.click("button[data-copy=ts]")
            assert await page.evaluate("navigator.clipboard.readText()") == f"{relay.url}/ts/{token}"

            # a tool pulling the TS URL shows in the menu
            async def play_ts() -> None:
                async with httpx.AsyncClient(timeout=30) as http, \
                        http.stream("GET", f"{relay.url}/ts/{token}") as ts:
                    async for _ in ts.aiter_bytes():
                        pass

            player = asyncio.create_task(play_ts())
            await page.wait_for_function(
                "document.querySelector('[data-count=ts]').textContent === '1 client'",
                timeout=20_000)
            await page.fill("#ndi-name", "Stage left")
            await page.click("#ndi-toggle")
            if HAS_NDI:
                await page.wait_for_function("scopeRelay.outputs.ndiId", timeout=20_000)
                assert await page.text_content("#ndi-toggle") == "Stop NDI"
                ((_, output),) = relay.app[RELAY_KEY].outputs.ndi.values()
                assert output.name == "Stage left"
                await page.wait_for_function(
                    "scopeRelay.outputs.figures?.ndi?.frames_sent > 0", timeout=20_000)
                assert await page.text_content("#outputs-summary") == "Outputs (2)"
                if SHOTS:
                    menu = page.locator("section.output")
                    await menu.screenshot(path=str(Path(SHOTS) / "outputs-menu.png"))
                await page.click("#ndi-toggle")
                await page.wait_for_function("scopeRelay.outputs.ndiId === null", timeout=20_000)
                assert not relay.app[RELAY_KEY].outputs.ndi
            else:  # the relay says what is missing; the page shows it
                await page.wait_for_function("scopeRelay.outputs.error", timeout=20_000)
                assert "ndi" in (await page.text_content("#ndi-state") or "")
            player.cancel()
            assert page.errors == []
