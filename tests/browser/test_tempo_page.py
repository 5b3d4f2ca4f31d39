"""The page's tempo strip in Debian's Chromium: source, BPM and quantize reach the relay,
a refused BPM is said and not sent, and the beat indicator runs with the relay's beat.

With ``SCOPE_RELAY_SCREENSHOTS=docs/screenshots`` it saves ``tempo-strip.png``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import pytest_asyncio

from scope_relay.local.server import RELAY_KEY

from helpers.chromium import chromium_context, needs_chromium, page_at, start_pipeline
from helpers.servers import cloud_server, relay_server
from helpers.waiting import wait_until

pytestmark = [pytest.mark.browser, needs_chromium, pytest.mark.asyncio(loop_scope="module")]

SHOTS = os.environ.get("SCOPE_RELAY_SCREENSHOTS")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser():
    async with chromium_context() as context:
        yield context


async def test_tempo_controls_drive_the_relay_and_the_beat_shows(browser):
    async with cloud_server() as cloud, relay_server(cloud) as relay:
        tempo = relay.app[RELAY_KEY].tempo
        async with page_at(browser, relay.url) as page:
            await page.wait_for_function("window.scopeRelayTempo?.state?.source === 'off'",
                                         timeout=5_000)
            await page.select_option("#tempo select[name=source]", "manual")
            await wait_until(lambda: tempo.source is not None and tempo.source.name == "manual")
            await page.fill("#tempo input[name=bpm]", "140")
            await page.dispatch_event("#tempo input[name=bpm]", "change")
            await wait_until(lambda: tempo.grid() is not None and tempo.grid().bpm == 140.0)
            await page.select_option("#tempo select[name=quantize]", "bar")
            await wait_until(lambda: tempo.quantize == "bar")
            await start_pipeline(page, "beat-flash")
            first = int(await page.get_attribute("#tempo", "data-beat"))
            await page.wait_for_function(
                f"Number(document.querySelector('#tempo').dataset.beat) >= {first + 2}",
                timeout=5_000)  # 140 BPM: two beats in under a second
            assert await page.locator("#tempo .beat-dots span.on").count() == 1
            await wait_until(lambda: tempo.sends >= 1, timeout=20)  # the session's cloud has it
            if SHOTS:
                Path(SHOTS).mkdir(parents=True, exist_ok=True)
                await page.screenshot(path=str(Path(SHOTS) / "tempo-strip.png"))
            await page.fill("#tempo input[name=bpm]", "5")  # refused on the page, not sent
            await page.dispatch_event("#tempo input[name=bpm]", "change")
            assert "20 to 999" in await page.text_content("#tempo .tempo-note")
            assert tempo.grid().bpm == 140.0
            await page.click("#tempo button[name=tap]")  # a tap: manual, on the beat
            await wait_until(lambda: tempo.source.name == "manual")
            # the first gesture has the page report its audio output latency, which the
            # relay adds to every session's path
            await wait_until(lambda: tempo.page_latency > 0, timeout=5)
            print(f"\nthe page's output latency: {tempo.page_latency * 1000:.1f} ms")
            assert page.errors == []
