"""A ``ParamSpec`` label is what the page shows for the control, as written (units keep
their case); without one the page titles the parameter's name, as before."""

from __future__ import annotations

import pytest

from scope_relay.cloud.app import STATE_KEY
from scope_relay.cloud.pipelines import ParamSpec, Pipeline

from helpers.chromium import chromium_context, needs_chromium, page_at
from helpers.servers import cloud_server, relay_server

pytestmark = [pytest.mark.browser, needs_chromium]


class Labelled(Pipeline):
    pipeline_id = "labelled"
    name = "Labelled"
    produces_audio = True
    params = {
        "gain_db": ParamSpec("number", 0.0, "output gain", -24.0, 6.0, label="output (dB)"),
        "root_hz": ParamSpec("number", 220.0, "the drone's root", 20.0, 2000.0),
    }

    def __call__(self, inputs, params):
        return None


async def test_the_page_shows_a_label_as_written_and_titles_a_name_without_one():
    async with cloud_server() as cloud, relay_server(cloud) as relay, chromium_context() as browser:
        cloud.app[STATE_KEY].registry.register(Labelled)  # before the page lists pipelines
        async with page_at(browser, relay.url) as page:
            await page.select_option("#pipeline", "labelled")
            head = "#params [data-param={}] .param-head label"
            await page.wait_for_selector(head.format("gain_db"))
            # innerText is the rendered text: CSS title-casing would show "Output (DB)"
            assert await page.inner_text(head.format("gain_db")) == "output (dB)"
            assert await page.inner_text(head.format("root_hz")) == "Root Hz"
            assert page.errors == []
