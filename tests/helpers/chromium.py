"""Debian's Chromium as the tests and benchmarks drive it: these flags, a fresh profile, no
browser download (docs/architecture.md, Measuring)."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
    "--autoplay-policy=no-user-gesture-required", "--no-sandbox", "--disable-gpu",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--no-first-run", "--allow-loopback-in-peer-connection", "--disable-quic",
]


#: skip a module's tests where Debian's Chromium is not installed
needs_chromium = pytest.mark.skipif(
    shutil.which("chromium") is None and not os.path.exists(CHROMIUM),
    reason="Debian chromium not installed (scripts/setup.sh --system)")
#: a page-side condition: the page's session state is ``{}``
STATE = "scopeRelay.state.id === '{}'"
#: where the tests save what they show (``SCOPE_RELAY_SCREENSHOTS=docs/screenshots``), if set
SHOTS = os.environ.get("SCOPE_RELAY_SCREENSHOTS")


@contextlib.asynccontextmanager
async def chromium_context() -> AsyncIterator[Any]:
    """Headless Chromium with these flags in a fresh profile (one per test module)."""
    from playwright.async_api import async_playwright

    with tempfile.TemporaryDirectory() as profile:
        async with async_playwright() as pw:
            context = await pw.chromium.launch_persistent_context(
                profile, executable_path=CHROMIUM, headless=True, args=ARGS,
                viewport={"width": 1280, "height": 860})
            try:
                yield context
            finally:
                await context.close()


async def snap(page: Any, name: str) -> None:
    """Save ``page`` as ``<SHOTS>/<name>.png`` when screenshots are asked for."""
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(Path(SHOTS) / f"{name}.png"))


async def commit_param(page: Any, name: str, value: str) -> None:
    """Type ``value`` into a parameter's entry and commit it, as leaving the field does."""
    entry = f"#params input[name={name}]"
    await page.fill(entry, value)
    await page.dispatch_event(entry, "change")


@contextlib.asynccontextmanager
async def page_at(browser: Any, url: str, init_script: str | None = None) -> AsyncIterator[Any]:
    """The relay's page, loaded with its pipelines listed; console errors and uncaught
    exceptions collected in ``page.errors`` (callers assert it empty)."""
    page = await browser.new_page()
    if init_script:
        await page.add_init_script(init_script)
    page.errors = []
    page.on("console", lambda m: page.errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    await page.goto(url + "/")
    await page.wait_for_function("document.querySelector('#pipeline').options.length >= 4",
                                 timeout=20_000)
    try:
        yield page
    finally:
        await page.close()


async def start_pipeline(page: Any, pipeline: str) -> str:
    """Start ``pipeline`` on the page and wait until it plays; the session's full id."""
    await page.select_option("#pipeline", pipeline)
    await page.click("#start")
    await page.wait_for_function(STATE.format("playing"), timeout=30_000)
    return str(await page.evaluate("scopeRelay.sessionId"))
