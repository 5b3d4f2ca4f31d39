"""A recording that fails at the relay (a write error: a full disk) shows on the page within
a second, pushed on the session's data channel: the clock stops, the reason is shown, the
file that survived is offered. Debian's real Chromium, the real cloud app and relay."""

from __future__ import annotations

import time

import pytest
import pytest_asyncio

from helpers.chromium import chromium_context, needs_chromium, page_at, start_pipeline
from helpers.full_disk import fail_video_writes_from
from helpers.servers import cloud_server, relay_server
from helpers.waiting import wait_until

pytestmark = [
    pytest.mark.browser,
    needs_chromium,
    pytest.mark.asyncio(loop_scope="module"),
]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser():
    async with chromium_context() as context:
        yield context


@pytest.fixture
def disk_fills_at_frame_48(monkeypatch) -> list[float]:
    """The file writer raises ENOSPC at its 48th video frame (2 s of av-sync)."""
    return fail_video_writes_from(monkeypatch, 48)


async def test_a_failed_recording_shows_on_the_page_within_a_second(browser,
                                                                     disk_fills_at_frame_48):
    async with cloud_server() as cloud, relay_server(cloud) as relay:
        async with page_at(browser, relay.url) as page:
            await start_pipeline(page, "av-sync")
            await page.wait_for_selector("#record:enabled", timeout=10_000)
            await page.click("#record")
            await page.wait_for_function("scopeRelay.recording.state === 'recording'",
                                         timeout=10_000)
            await wait_until(lambda: disk_fills_at_frame_48, timeout=20)
            await page.wait_for_function(
                "scopeRelay.recording.state === 'idle' && scopeRelay.recording.ended === 'failed'",
                timeout=5_000, polling=20)
            shown = time.monotonic() - disk_fills_at_frame_48[0]
            print(f"failed recording shown on the page {shown * 1000:.0f} ms after the error")
            assert shown < 1.0
            notice = await page.text_content("#record-notice")
            assert await page.is_visible("#record-notice")
            assert notice.startswith("Recording failed:") and "No space left" in notice
            assert not await page.is_visible("#record-elapsed")  # the clock stopped
            assert await page.text_content("#record span") == "Record"
            # what was written before the error plays, and is offered
            await page.wait_for_selector("#record-link", state="visible", timeout=5_000)
            reply = await page.request.get(await page.evaluate(
                "document.querySelector('#record-link').href"))
            assert reply.ok and reply.headers["x-content-type-options"] == "nosniff"
            assert page.errors == []
