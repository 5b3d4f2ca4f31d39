"""Chromium's camera goes up to the cloud still encoded (issue 27): the relay forwards the
page's VP8 (and H.264, when the cloud hop takes it) frames without decoding them, and the
cloud's pipeline gets the pictures."""

from __future__ import annotations

import httpx
import pytest

from scope_relay.cloud.app import STATE_KEY

from helpers.chromium import needs_chromium
from helpers.servers import cloud_server, relay_server
from helpers.waiting import wait_until

pytestmark = [
    pytest.mark.browser,
    needs_chromium,
    pytest.mark.asyncio(loop_scope="module"),  # one browser for the module (conftest.py)
]


@pytest.mark.parametrize("codec", ["vp8", "h264"])
async def test_chromiums_camera_reaches_the_cloud_undecoded(browser, codec):
    async with cloud_server(video_codec=codec) as cloud, relay_server(cloud) as relay:
        page = await browser.new_page()
        await page.goto(relay.url + "/")
        await page.wait_for_function(
            "document.querySelector('#pipeline').options.length >= 4", timeout=20_000)
        await page.select_option("#pipeline", "passthrough")
        await page.click("#start")
        await page.wait_for_function("scopeRelay.connectionState === 'connected'",
                                     timeout=30_000)
        (session,) = cloud.app[STATE_KEY].sessions.values()
        await wait_until(lambda: session.stats()["video_frames_sent"] >= 30, timeout=30)
        async with httpx.AsyncClient(base_url=relay.url, timeout=10) as http:
            (stats,) = (await http.get("/api/v1/stats")).json()["sessions"]
        await page.click("#stop")
        await page.close()
    up = stats["camera_uplink"]
    assert up["forwarding"] and up["codec"] == codec, up
    assert up["forwarded_frames"] >= 30 and up["decoded_frames"] == 0, up
    assert stats["cloud_video_codec"] == codec
