"""The page's tempo strip in Debian's Chromium: source, BPM and quantize reach the relay,
a refused BPM is said and not sent, and the beat indicator runs with the relay's beat.

With ``SCOPE_RELAY_SCREENSHOTS=docs/screenshots`` it saves ``tempo-strip.png``."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from scope_relay.cloud.app import STATE_KEY
from scope_relay.local.server import RELAY_KEY

from helpers.chromium import chromium_context, needs_chromium, page_at, snap, start_pipeline
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


# the flashes' peak brightness as the page draws them (requestVideoFrameCallback)
FLASH_LEVELS = """async (seconds) => {
  const video = document.querySelector('#video');
  const canvas = new OffscreenCanvas(16, 16), g = canvas.getContext('2d', {willReadFrequently: true});
  const peaks = []; let peak = 0;
  const onFrame = () => {
    g.drawImage(video, 0, 0, 16, 16);
    const px = g.getImageData(0, 0, 16, 16).data;
    let sum = 0; for (let i = 0; i < px.length; i += 4) sum += px[i];
    const level = sum / (px.length / 4);
    if (level > 60) peak = Math.max(peak, level);
    else if (peak) { peaks.push(peak); peak = 0; }
    video.requestVideoFrameCallback(onFrame);
  };
  video.requestVideoFrameCallback(onFrame);
  await new Promise((r) => setTimeout(r, seconds * 1000));
  return peaks;
}"""


async def test_modulation_editor_reaches_the_cloud_and_moves_the_flashes(browser):
    """A square wave over two beats on beat-flash's brightness, set in the page's editor:
    the cloud holds it, and the flashes the page draws alternate full and dimmed."""
    async with cloud_server() as cloud, relay_server(cloud) as relay:
        tempo = relay.app[RELAY_KEY].tempo
        await tempo.update({"source": "manual", "bpm": 150})
        async with page_at(browser, relay.url) as page:
            await start_pipeline(page, "beat-flash")
            (session,) = cloud.app[STATE_KEY].sessions.values()
            editor = "#params [data-modulate=brightness]"
            await page.click("#params button[aria-label='Modulate brightness']")
            await page.fill(f"{editor} input[name=brightness-mod-rate]", "0")  # refused on the page
            await page.dispatch_event(f"{editor} input[name=brightness-mod-rate]", "change")
            await page.select_option(f"{editor} select[name=brightness-mod-shape]", "square")
            assert "rate" in await page.text_content(f"{editor} .mod-note")
            assert not session.runner.tempo.modulations  # nothing was sent
            await page.fill(f"{editor} input[name=brightness-mod-rate]", "2")
            await page.dispatch_event(f"{editor} input[name=brightness-mod-rate]", "change")
            await page.fill(f"{editor} input[name=brightness-mod-depth]", "0.6")
            await page.dispatch_event(f"{editor} input[name=brightness-mod-depth]", "change")
            await wait_until(lambda: getattr(session.runner.tempo.modulations.get("brightness"),
                                             "depth", None) == 0.6, timeout=10)
            mod = session.runner.tempo.modulations["brightness"]
            assert (mod.shape, mod.rate) == ("square", 2.0)
            await snap(page, "modulation-editor")
            await wait_until(lambda: session.runner.tempo.counts.tempo_updates >= 1, timeout=20)
            peaks = await page.evaluate(FLASH_LEVELS, 6.0)  # 150 BPM: ~15 flashes
            print(f"\nflash peaks as drawn: {[round(p) for p in peaks]}")
            # brightness 1.0 + 0.6 clipped at 1.0 on even beats; 1.0 - 0.6 = 0.4 on odd ones
            # (a loaded headless Chromium composites few frames: a one-frame flash can be
            # missed, the bar's three-frame one seldom is, so only both levels are asserted)
            assert max(peaks) > 200 and min(peaks) < 150
            await page.select_option(f"{editor} select[name=brightness-mod-shape]", "off")
            await wait_until(lambda: not session.runner.tempo.modulations, timeout=10)
            assert page.errors == []


# navigator.requestMIDIAccess replaced by one input sending MIDI clock at window.midiBpm:
# start (0xFA), then 24 ticks a beat, each stamped with its ideal time as a MIDI driver
# stamps it (delivered by a timer, in order)
MIDI_STUB = """(() => {
  const input = new EventTarget();
  input.id = 'stub'; input.name = 'stub clock'; input.type = 'input'; input.state = 'connected';
  const listeners = [];
  input.addEventListener = (type, fn) => { if (type === 'midimessage') listeners.push(fn); };
  const access = new EventTarget();
  access.inputs = new Map([['stub', input]]);
  access.outputs = new Map();
  window.midiBpm = 128;
  navigator.requestMIDIAccess = async () => {
    let due = performance.now() + 20;
    let started = false;
    const tick = () => {
      while (due <= performance.now()) {
        const data = new Uint8Array([started ? 0xF8 : 0xFA]);
        started = true;
        for (const fn of listeners) fn({data, timeStamp: due});
        due += 60000 / (window.midiBpm * 24);
      }
      setTimeout(tick, 5);
    };
    tick();
    return access;
  };
})();"""


async def test_web_midi_clock_is_the_relay_tempo(browser):
    """The page as the tempo source: a Web MIDI clock at 128 BPM (a stubbed MIDIAccess) is
    followed by the relay within 0.5 BPM, and a change to 90 BPM likewise."""
    async with cloud_server() as cloud, relay_server(cloud) as relay, \
            httpx.AsyncClient(base_url=relay.url, timeout=30) as http:
        async with page_at(browser, relay.url, init_script=MIDI_STUB) as page:
            await page.wait_for_function("window.scopeRelayTempo?.state", timeout=5_000)
            await page.select_option("#tempo select[name=source]", "page")

            tempo = relay.app[RELAY_KEY].tempo

            def follows(bpm: float) -> bool:
                grid = tempo.grid()
                return tempo.source.name == "page" and grid is not None \
                    and abs(grid.bpm - bpm) <= 0.5

            for bpm in (128.0, 90.0):
                await page.evaluate(f"window.midiBpm = {bpm}")
                await wait_until(lambda bpm=bpm: follows(bpm), timeout=10)
                state = (await http.get("/api/v1/tempo")).json()
                print(f"\nthe relay from the page's Web MIDI clock at {bpm:g}: {state['bpm']:.3f} BPM")
                assert state["source"] == "page" and abs(state["bpm"] - bpm) <= 0.5
            assert page.errors == []
