"""An open page polls the relay several times a second; those requests are logged at DEBUG
only, so the terminal at the default INFO level shows the events that matter."""

from __future__ import annotations

import logging

import httpx
import pytest

from scope_relay.local.server import RELAY_KEY

from helpers.waiting import wait_until

#: what the page polls (main.js: cloud and pipeline status; stats.js: the figures)
PAGE_POLLS = ("/api/v1/cloud/status", "/api/v1/pipeline/status", "/api/v1/stats")
#: this test's own HTTP client logs each request at INFO; the servers are what is checked
TEST_CLIENT = ("httpx", "httpcore")


async def test_page_polls_log_nothing_at_info(stack, caplog: pytest.LogCaptureFixture):
    cloud, relay = stack
    connection = relay.app[RELAY_KEY].connection
    await wait_until(lambda: connection.state == "ready", timeout=20)
    caplog.set_level(logging.DEBUG)
    caplog.clear()
    async with httpx.AsyncClient(base_url=relay.url, timeout=20) as http:
        for _ in range(3):
            for path in PAGE_POLLS:
                assert (await http.get(path)).status_code == 200, path
        # the cloud app's own HTTP routes go through the same serve()
        assert (await http.get(f"{cloud.url}/health")).status_code == 200

    def access() -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.name == "aiohttp.access"]

    # one access line per request (written just after the response, so the last ones may
    # trail the client by a moment), at DEBUG: there for whoever asks for it
    requests = 3 * len(PAGE_POLLS) + 1
    await wait_until(lambda: len(access()) >= requests)
    assert {r.levelno for r in access()} == {logging.DEBUG}
    loud = [f"{r.name} {r.levelname}: {r.getMessage()}" for r in caplog.records
            if r.levelno >= logging.INFO and not r.name.startswith(TEST_CLIENT)]
    assert not loud, loud
    lines = [r.getMessage() for r in access()]
    for path in PAGE_POLLS:
        assert sum(f" GET {path} 200 " in line for line in lines) == 3, lines
