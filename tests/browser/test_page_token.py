"""The page in Chromium on a relay that needs its token: opening the printed URL is all
it takes (the token becomes an HttpOnly cookie, the URL loses it, the page streams)."""

from __future__ import annotations

import pytest

from scope_relay.local.cloud_link.target import CloudTarget
from scope_relay.local.server import RELAY_KEY, RelayConfig, create_relay_app

from helpers.chromium import STATE, chromium_context, needs_chromium, start_pipeline
from helpers.servers import SHUTDOWN_TIMEOUT, cloud_server, serve

pytestmark = [pytest.mark.browser, needs_chromium]

LAN_ADDRESS = "127.0.0.2"


async def test_the_page_streams_after_opening_the_token_url():
    # Chromium connects from 127.0.0.1, which the relay counts as its own machine:
    # --require-token makes it ask this client for the token too
    async with cloud_server() as cloud, chromium_context() as browser:
        app = create_relay_app(RelayConfig(CloudTarget(cloud.ws_url), loopback_ice=True,
                                           listen_host=LAN_ADDRESS, require_token=True))
        async with serve(app, host=LAN_ADDRESS, shutdown_timeout=SHUTDOWN_TIMEOUT) as relay:
            token = app[RELAY_KEY].config.token
            page = await browser.new_page()
            await page.goto(relay.url + "/")  # the page itself is open; its API is not
            assert await page.evaluate("fetch('/api/v1/stats').then(r => r.status)") == 401
            await page.wait_for_function(STATE.format("locked"), timeout=20_000)  # says why
            await page.goto(f"{relay.url}/?token={token}")
            assert page.url == relay.url + "/"  # the token left the address bar
            await page.wait_for_function(
                "document.querySelector('#pipeline').options.length >= 4", timeout=30_000)
            session_id = await start_pipeline(page, "test-tone")
            assert session_id in app[RELAY_KEY].sessions
            (cookie,) = await browser.cookies(relay.url)
            assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
            assert token not in cookie["value"]
            assert await page.evaluate("document.cookie") == ""  # scripts cannot read it
            await page.close()
