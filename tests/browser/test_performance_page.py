"""The page as a performance surface, in Debian's real Chromium: honest states, controls
from the schema, what a performer watches, MIDI learn. One browser for the module.

With ``SCOPE_RELAY_SCREENSHOTS=docs/screenshots`` the tests also save a screenshot of each
state and pipeline they reach (the README shows them).
"""

from __future__ import annotations

import pytest

from scope_relay.cloud.app import STATE_KEY
from scope_relay.local.cloud_link.target import CloudTarget
from scope_relay.local.server import RelayConfig, create_relay_app

from helpers.chromium import (
    SHOTS,
    STATE,
    commit_param,
    needs_chromium,
    page_at,
    snap,
    start_pipeline,
)
from helpers.servers import cloud_server, relay_server, serve
from helpers.waiting import wait_until

pytestmark = [
    pytest.mark.browser,
    needs_chromium,
    pytest.mark.asyncio(loop_scope="module"),
]



def runner_params(cloud) -> dict:
    (session,) = cloud.app[STATE_KEY].sessions.values()
    return session.runner.params


async def test_load_play_stop_say_what_happens_without_console_errors(browser):
    async with cloud_server() as cloud, relay_server(cloud) as relay:
        async with page_at(browser, relay.url) as page:
            await page.wait_for_function(STATE.format("idle"), timeout=5_000)
            await snap(page, "state-idle")
            await start_pipeline(page, "av-sync")
            await page.wait_for_function("scopeRelay.figures?.fps > 0", timeout=10_000)
            assert await page.text_content("#fig-sync") in ("in sync", "waiting")
            await snap(page, "pipeline-av-sync")
            await page.keyboard.press("Space")  # the shortcut stops it
            await page.wait_for_function(STATE.format("stopped"), timeout=1_000)
            assert await page.text_content("#state-title") == "Stopped"
            assert await page.text_content("#fig-fps") == "—"  # no figures frozen from before
            assert await page.evaluate("scopeRelay.levels") == [0, 0]
            await snap(page, "state-stopped")
            assert page.errors == []


async def test_slider_range_is_enforced_and_a_change_reaches_the_pipeline(browser):
    async with cloud_server() as cloud, relay_server(cloud) as relay:
        async with page_at(browser, relay.url) as page:
            await start_pipeline(page, "test-tone")
            slider = "#params input[name=frequency-slider]"
            assert await page.get_attribute(slider, "min") == "20"
            assert await page.get_attribute(slider, "max") == "11000"
            entry = "#params input[name=frequency]"
            await page.fill(entry, "50000")  # out of range: shown invalid, not sent
            await page.dispatch_event(entry, "change")
            assert await page.get_attribute(entry, "aria-invalid") == "true"
            assert "at most 11000" in await page.text_content("[data-param=frequency] .param-note")
            await page.fill(entry, "")
            await page.dispatch_event(entry, "change")
            assert await page.get_attribute(entry, "aria-invalid") == "true"
            await snap(page, "invalid-value")
            assert runner_params(cloud)["frequency"] == 440.0
            # a slider drag (keyboard on the slider) goes live to the running pipeline
            await page.eval_on_selector(slider, "s => { s.value = 1230; "
                                                "s.dispatchEvent(new Event('input')); }")
            await wait_until(lambda: runner_params(cloud).get("frequency") == 1230.0)
            assert await page.input_value(entry) == "1230"
            assert await page.get_attribute(entry, "aria-invalid") == "false"
            assert page.errors == []


async def test_level_meter_moves_with_the_tone_and_rests_with_silence(browser):
    async with cloud_server() as cloud, relay_server(cloud) as relay:
        async with page_at(browser, relay.url) as page:
            await start_pipeline(page, "test-tone")
            await page.wait_for_function("Math.max(...scopeRelay.levels) > 0.2", timeout=10_000,
                                         polling=50)
            await snap(page, "pipeline-test-tone")
            await commit_param(page, "volume", "0")
            await wait_until(lambda: runner_params(cloud).get("volume") == 0.0)
            # silent for 2 s in a row (two beeps' worth): the meter rests
            await page.wait_for_function("""() => {
                const now = performance.now(), l = Math.max(...scopeRelay.levels);
                if (l > 0.01 || !window._quietSince) window._quietSince = l > 0.01 ? null : now;
                return window._quietSince && now - window._quietSince > 2000;
            }""", timeout=15_000, polling=50)


async def test_switching_pipelines_while_playing_restarts_on_the_new_one(browser):
    async with cloud_server() as cloud, relay_server(cloud) as relay:
        async with page_at(browser, relay.url) as page:
            await start_pipeline(page, "test-tone")
            first = await page.evaluate("scopeRelay.sessionId")
            await page.select_option("#pipeline", "av-sync")  # one action
            await page.wait_for_function(
                f"scopeRelay.pipeline === 'av-sync' && scopeRelay.sessionId !== '{first}' "
                "&& scopeRelay.state.id === 'playing'", timeout=30_000)
            (session,) = cloud.app[STATE_KEY].sessions.values()
            assert session.pipeline_ids == ["av-sync"]
            # the controls are the new pipeline's, and they drive it
            assert await page.locator("#params [data-param]").evaluate_all(
                "rows => rows.map(r => r.dataset.param)") == ["volume"]
            await commit_param(page, "volume", "0.25")
            await wait_until(lambda: session.runner.params.get("volume") == 0.25)
            assert await page.is_hidden("#audio-only")
            assert page.errors == []


async def test_output_keeps_its_aspect_goes_fullscreen_and_pops_out(browser):
    async with cloud_server() as cloud, relay_server(cloud) as relay:
        async with page_at(browser, relay.url) as page:
            await start_pipeline(page, "bursty-av")
            await page.wait_for_function("document.querySelector('#video').videoWidth > 0",
                                         timeout=20_000)
            ratio = await page.evaluate("""() => {
                const v = document.querySelector('#video'), s = document.querySelector('#stage');
                return [v.videoWidth / v.videoHeight, s.clientWidth / s.clientHeight,
                        getComputedStyle(v).objectFit];
            }""")
            assert abs(ratio[0] - ratio[1]) < 0.02 and ratio[2] == "contain", ratio
            await snap(page, "pipeline-bursty-av")
            async with page.context.expect_page() as popped:
                await page.click("#popout")
            popout = await popped.value
            await popout.wait_for_function(
                "document.querySelector('#popout-video')?.srcObject?.getVideoTracks().length === 1",
                timeout=5_000)
            await popout.close()
            await page.bring_to_front()
            await page.keyboard.press("f")
            await page.wait_for_function("document.fullscreenElement?.id === 'stage'",
                                         timeout=5_000)
            await page.keyboard.press("f")
            await page.wait_for_function("document.fullscreenElement === null", timeout=5_000)
            assert page.errors == []


async def test_a_slow_generator_is_named_with_its_speed(browser):
    """bursty-av makes 2 s of media per call; 3 s per call is 0.67x real time."""
    async with cloud_server() as cloud, relay_server(cloud) as relay:
        async with page_at(browser, relay.url) as page:
            await page.select_option("#pipeline", "bursty-av")
            await commit_param(page, "generation_delay", "3")
            await page.click("#start")
            await page.wait_for_function(STATE.format("waiting"), timeout=20_000)  # 3 s to the first
            await snap(page, "state-waiting-for-media")
            await page.wait_for_function(STATE.format("slow"), timeout=40_000)
            detail = await page.text_content("#state-detail")
            assert detail.startswith("generating at 0.") and detail.endswith("x real time"), detail
            speed = await page.evaluate("scopeRelay.figures.speed")
            assert 0.5 < speed < 0.8, speed
            await snap(page, "state-slow-generator")


async def test_a_generator_that_stops_producing_is_named_stalled(browser):
    async with cloud_server() as cloud, relay_server(cloud) as relay:
        async with page_at(browser, relay.url) as page:
            await page.select_option("#pipeline", "bursty-av")
            await commit_param(page, "generation_delay", "0.5")
            await start_pipeline(page, "bursty-av")
            await commit_param(page, "generation_delay", "30")  # next call: 30 s
            await page.wait_for_function(STATE.format("stalled"), timeout=20_000)
            assert (await page.text_content("#state-detail")).startswith("no new media for")
            await snap(page, "state-stalled")


@pytest.mark.skipif(not SHOTS, reason="screenshots only (SCOPE_RELAY_SCREENSHOTS)")
async def test_screenshots_of_the_camera_pipeline_and_a_phone(browser):
    async with cloud_server() as cloud, relay_server(cloud) as relay:
        async with page_at(browser, relay.url) as page:
            await start_pipeline(page, "passthrough")
            await page.wait_for_function("scopeRelay.figures?.fps > 0", timeout=10_000)
            await snap(page, "pipeline-passthrough")
            await page.set_viewport_size({"width": 390, "height": 844})
            await snap(page, "phone")


async def test_cloud_killed_then_restarted(browser):
    first = cloud_server()
    cloud = await first.__aenter__()
    try:
        port = int(cloud.url.rsplit(":", 1)[1])
        async with relay_server(cloud) as relay, page_at(browser, relay.url) as page:
            await start_pipeline(page, "test-tone")
            await first.__aexit__(None, None, None)  # the cloud app goes away
            first = None
            await page.wait_for_function(STATE.format("unreachable"), timeout=1_500)
            assert "reconnecting" in await page.text_content("#state-title")
            await snap(page, "state-cloud-unreachable")
            async with cloud_server(port=port):  # back where it was
                await page.wait_for_function(STATE.format("playing"), timeout=40_000)
                await page.wait_for_function("Math.max(...scopeRelay.levels) > 0.1",
                                             timeout=10_000, polling=50)
    finally:
        if first is not None:
            await first.__aexit__(None, None, None)


async def test_a_refused_key_is_named(browser):
    async with cloud_server(api_key="the-right-key") as cloud:
        app = create_relay_app(RelayConfig(CloudTarget(cloud.ws_url, api_key="wrong"),
                                           loopback_ice=True))
        async with serve(app, shutdown_timeout=1.0) as relay:
            page = await browser.new_page()
            await page.goto(relay.url + "/")
            await page.wait_for_function(STATE.format("refused"), timeout=5_000)
            assert await page.text_content("#state-title") == "Cloud refused the key"
            assert "SCOPE_CLOUD_API_KEY=" in await page.text_content("#hint")  # what to set
            await snap(page, "state-key-refused")
            await page.close()


# A Web MIDI stand-in: one input whose messages the test plays through window.fakeMidi.
FAKE_MIDI = """
(() => {
  const input = { id: "fake-1", name: "Fake Controller", type: "input", onmidimessage: null };
  const access = { inputs: new Map([["fake-1", input]]), outputs: new Map(), onstatechange: null };
  window.fakeMidi = (bytes) => input.onmidimessage?.({ data: new Uint8Array(bytes) });
  navigator.requestMIDIAccess = async () => access;
})();
"""


async def test_midi_learn_maps_a_controller_and_remembers_it(browser):
    async with cloud_server() as cloud, relay_server(cloud) as relay:
        page = await browser.new_page()
        await page.add_init_script(FAKE_MIDI)
        await page.goto(relay.url + "/")
        await page.wait_for_function("document.querySelector('#pipeline').options.length >= 4",
                                     timeout=20_000)
        await start_pipeline(page, "test-tone")
        await page.click("[data-learn=frequency]")
        await page.wait_for_function("scopeRelay.midi.learning === 'frequency'")
        await snap(page, "midi-learn")
        await page.evaluate("fakeMidi([0xB0, 21, 127])")  # CC 21 on channel 1, full up
        await page.wait_for_function("scopeRelay.midi.mapping['cc:0:21'] === 'frequency'")
        await wait_until(lambda: runner_params(cloud).get("frequency") == 11000.0)
        await page.evaluate("fakeMidi([0xB0, 21, 0])")
        await wait_until(lambda: runner_params(cloud).get("frequency") == 20.0)
        assert await page.input_value("#params input[name=frequency]") == "20"
        # saved per pipeline: after a reload the knob still drives the tone
        await page.reload()
        await page.wait_for_function("document.querySelector('#pipeline').options.length >= 4")
        await page.select_option("#pipeline", "test-tone")
        await page.wait_for_function("scopeRelay.midi.mapping['cc:0:21'] === 'frequency'")
        await page.evaluate("fakeMidi([0xB0, 21, 64])")
        value = float(await page.input_value("#params input[name=frequency]"))
        assert abs(value - (20 + 64 / 127 * 10980)) < 1, value
        await page.close()


async def test_every_state_comes_from_one_function(browser):
    """state.js alone turns facts into what the page says; each state from its facts."""
    async with cloud_server() as cloud, relay_server(cloud) as relay:
        async with page_at(browser, relay.url) as page:
            ids = await page.evaluate("""async () => {
                const { deriveState } = await import('/static/js/state.js');
                const base = { phase: 'live', reason: null, connection: 'connected',
                    cloud: { state: 'ready' }, relayReachable: true, mediaSeen: true,
                    mediaAgeMs: 0, speed: 1, pipelineFailed: null, loading: null };
                const cases = {
                    idle: { phase: 'idle' }, stopped: { phase: 'stopped' },
                    failed: { pipelineFailed: 'CUDA out of memory' },
                    connecting: { phase: 'connecting', connection: 'new' },
                    loading: { phase: 'connecting', loading: { phase: 'weights', fraction: 0.4 } },
                    waiting: { mediaSeen: false }, playing: {},
                    slow: { speed: 0.4 }, stalled: { mediaAgeMs: 3000 },
                    unreachable: { cloud: { state: 'reconnecting', last_error: 'x' } },
                    refused: { cloud: { state: 'refused', last_error: 'refused the API key' } },
                    reconnecting: { phase: 'retrying', reason: 'connection failed' },
                    'relay-down': { relayReachable: false },
                    'no-cloud': { phase: 'idle', cloud: { state: 'connecting',
                        url: 'ws://127.0.0.1:8001/ws',
                        last_error: 'Cannot connect to host 127.0.0.1:8001 ssl:default [refused]' } },
                };
                const out = {};
                for (const [id, f] of Object.entries(cases)) {
                    const s = deriveState({ ...base, ...f });
                    out[id] = [s.id, s.detail];
                }
                return out;
            }""")
            for expected, (got, _) in ids.items():
                assert got == expected, (expected, got)
            assert ids["slow"][1] == "generating at 0.4x real time"
            assert ids["loading"][1] == "weights 40%"
            assert ids["no-cloud"][1] == "nothing answers at ws://127.0.0.1:8001/ws"
