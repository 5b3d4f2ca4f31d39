"""What the cloud says about a running session reaches the page in Debian's Chromium: a
value it refused (sent past the page's own checks, as OSC gear can) and, with
``--reload``, an edit of the running pipeline that did not load."""

from __future__ import annotations

import json
import textwrap

import pytest

from scope_relay.cloud.hosting.discovery import ENV_VAR
from scope_relay.local.server import RELAY_KEY

from helpers.chromium import chromium_context, needs_chromium, page_at, start_pipeline
from helpers.servers import cloud_server, relay_server

pytestmark = [pytest.mark.browser, needs_chromium]

TONE = """
from scope_relay.cloud.builtin_pipelines.signals import TestTone


class EditedTone(TestTone):
    pipeline_id = "edited-tone"
    name = "Edited tone"
"""


async def test_refusals_and_reload_failures_show_on_the_page(tmp_path, monkeypatch):
    plugin = tmp_path / "edited_tone.py"
    plugin.write_text(textwrap.dedent(TONE))
    monkeypatch.setenv(ENV_VAR, f"{plugin}:EditedTone")
    async with chromium_context() as browser, cloud_server(reload=True) as cloud, \
            relay_server(cloud) as relay, page_at(browser, relay.url) as page:
        await start_pipeline(page, "edited-tone")
        assert not await page.evaluate("Object.keys(scopeRelay.notices).length")
        (session,) = relay.app[RELAY_KEY].sessions.values()
        updates = {"volume": 3.0}  # out of range: what the cloud refuses
        session.on_parameters(json.dumps(updates), updates, source="osc")
        # the cloud -> relay -> page: the volume control is marked refused, with the reason
        await page.wait_for_selector(".refused", state="visible", timeout=10_000)
        assert "refused 3" in (await page.text_content(".refused"))

        plugin.write_text(textwrap.dedent(TONE) + "\ndef broken(:\n")
        await page.wait_for_function("'reload' in scopeRelay.notices", timeout=15_000)
        text = await page.evaluate("scopeRelay.notices.reload")
        assert text.startswith("edited-tone: the edited code did not load") and "SyntaxError" in text
        assert await page.evaluate("scopeRelay.state.id") == "playing"  # the old code plays on
        assert not page.errors, page.errors
