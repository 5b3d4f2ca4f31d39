"""Each hop's video figures on the page, in Debian's real Chromium, from a real session
(cloud app and relay in this process): the cloud hop's codec, bitrate, the cloud's own
target and keyframes (``cloud_send``, read through the control socket), the page hop
forwarded with its bitrate; the same figures in ``/api/v1/stats`` and ``/metrics``. With
``SCOPE_RELAY_SCREENSHOTS=docs/screenshots`` the page is saved as ``hop-figures.png``."""

from __future__ import annotations

import re

import httpx
import pytest

from helpers.chromium import needs_chromium, page_at, snap, start_pipeline
from helpers.servers import cloud_server, relay_server

pytestmark = [
    pytest.mark.browser,
    needs_chromium,
    pytest.mark.asyncio(loop_scope="module"),
]

#: the text of one figure of one hop (without its label), or null
FIG = """([hop, name]) => {
    const el = document.querySelector(`#hop-${hop} [data-fig="${name}"]`);
    return el ? el.lastChild.textContent : null;
}"""
#: both hops show a bitrate and the cloud's keyframes are known
READY = """() => {
    const text = (hop, name) => document.querySelector(`#hop-${hop} [data-fig="${name}"]`)
        ?.lastChild.textContent ?? "—";
    return !document.querySelector('#hops').hidden
        && /bit\\/s$/.test(text("cloud", "bitrate")) && /bit\\/s$/.test(text("page", "bitrate"))
        && /^\\d+$/.test(text("cloud", "keyframes")) && text("page", "video") !== "—";
}"""
RATE = re.compile(r"^(\d+(?:\.\d)?) (kbit|Mbit)/s$")


def bits(text: str) -> float:
    match = RATE.match(text)
    assert match, text
    return float(match[1]) * (1e6 if match[2] == "Mbit" else 1e3)


async def test_a_session_shows_each_hops_video_figures(browser):
    async with cloud_server() as cloud, relay_server(cloud) as relay:
        async with page_at(browser, relay.url) as page:
            await start_pipeline(page, "av-sync")
            await page.wait_for_function(READY, timeout=30_000, polling=250)
            figs = {(hop, name): await page.evaluate(FIG, [hop, name])
                    for hop, names in (("cloud", ("codec", "bitrate", "target", "keyframes",
                                                  "PLIs", "NACKs", "loss")),
                                       ("page", ("video", "codec", "bitrate", "PLIs", "FIRs",
                                                 "NACKs", "loss")))
                    for name in names}
            assert figs["cloud", "codec"] in ("VP8", "H264"), figs
            assert figs["page", "codec"] == figs["cloud", "codec"], figs
            assert figs["page", "video"] == "forwarded", figs
            # a forwarded stream: what leaves the relay is what arrived, give or take timing
            cloud_rate, page_rate = bits(figs["cloud", "bitrate"]), bits(figs["page", "bitrate"])
            assert 20e3 < cloud_rate < 20e6 and 20e3 < page_rate < 20e6, figs
            assert bits(figs["cloud", "target"]) > 0, figs  # the cloud's own figure
            assert int(figs["cloud", "keyframes"]) >= 1, figs
            for name in ("PLIs", "NACKs"):
                assert re.fullmatch(r"\d+", figs["cloud", name]), figs
                assert re.fullmatch(r"\d+", figs["page", name]), figs
            # nothing is wrong on a loopback session: no figure coloured, no stale note
            assert await page.evaluate(
                "document.querySelectorAll('#hops [data-tone=warn]').length") == 0
            assert await page.evaluate("document.querySelector('#hops .hop-note')") is None
            await page.locator("#hops").scroll_into_view_if_needed()
            await snap(page, "hop-figures")

            async with httpx.AsyncClient(base_url=relay.url, timeout=10) as http:
                session = (await http.get("/api/v1/stats")).json()["sessions"][0]
                metrics = (await http.get("/metrics")).text
            send = session["cloud_send"]
            assert send["available"] is True and send["fetch_failures"] == 0, send
            assert 0 <= send["age_s"] < 5 and send["video"]["keyframes"] >= 1, send
            assert session["page_video_mode"] == "forwarded"
            assert session["cloud_video_bitrate"] > 0 and session["page_video_bitrate"] > 0
            for gauge in ("scope_relay_cloud_send_video_keyframes{",
                          "scope_relay_cloud_send_video_target_bitrate{",
                          "scope_relay_cloud_send_age_s{", "scope_relay_cloud_video_bitrate{",
                          "scope_relay_page_video_bitrate{"):
                assert gauge in metrics, gauge
            assert page.errors == []
            await page.click("#stop")


#: hops.js on figures a session could report: congestion control's (branch cc) included
HOPS = """async (stats) => {
    const hops = await import('/static/js/hops.js');
    const cloud = hops.cloudHop(stats);
    const page = hops.pageHop(stats, stats.pageLoss);
    const pick = (figs) => Object.fromEntries(figs.map((f) => [f.label, [f.text, f.tone]]));
    return {cloud: pick(cloud.figures), page: pick(page.figures), note: cloud.note,
            noteTone: cloud.noteTone};
}"""
CONGESTED = {
    "cloud_video_codec": "h264", "video_codec": "h264", "cloud_video_bitrate": 410_000,
    "page_video_bitrate": 405_000, "page_video_mode": "forwarded", "pageLoss": 0.031,
    "receive": {"video": {"nacks_sent": 12}}, "keyframes_upstream": {"sent": 2},
    "video_send": {"plis": 1, "firs": 0, "nacked_packets": 7},
    "cloud_send": {"available": True, "age_s": 0.4, "fetch_failures": 0, "last_error": None,
                   "video": {"target_bitrate": 450_000, "ceiling_bitrate": 4_000_000,
                             "estimate_bitrate": 450_000, "pacer_queue_delay_ms": 180.0,
                             "reported_loss": 0.05, "keyframes": 9, "ladder_step": 2,
                             "send_fps": 10.0, "send_width": 1280, "send_height": 720}}}


async def test_the_figures_in_words_with_only_what_is_wrong_coloured(browser):
    async with cloud_server() as cloud, relay_server(cloud) as relay:
        async with page_at(browser, relay.url) as page:
            got = await page.evaluate(HOPS, CONGESTED)
            c, p = got["cloud"], got["page"]
            assert c["codec"] == ["H264", ""] and c["bitrate"] == ["410 kbit/s", ""]
            assert c["target"] == ["450 kbit/s", ""]
            assert c["estimate"] == ["450 kbit/s", "warn"]  # under half the 4 Mbit/s ceiling
            assert c["queue"] == ["180 ms", "warn"] and c["loss"] == ["5.0 %", "warn"]
            assert c["sent as"] == ["10 fps 1280×720", ""]
            assert c["keyframes"] == ["9", ""] and c["PLIs"] == ["2", ""]
            assert c["NACKs"] == ["12", ""] and got["note"] == ""
            assert p["video"] == ["forwarded", ""] and p["NACKs"] == ["7", ""]
            assert p["loss"] == ["3.1 %", "warn"]

            healthy = {**CONGESTED, "pageLoss": 0.0, "cloud_send": {**CONGESTED["cloud_send"],
                       "video": {"target_bitrate": 4_000_000, "ceiling_bitrate": 4_000_000,
                                 "estimate_bitrate": 5_000_000, "pacer_queue_delay_ms": 3.0,
                                 "reported_loss": 0.0, "keyframes": 1, "ladder_step": 0}}}
            got = await page.evaluate(HOPS, healthy)
            tones = [t for hop in ("cloud", "page") for _, t in got[hop].values()]
            assert set(tones) == {""}, got
            assert "sent as" not in got["cloud"]  # the full picture: no ladder figure

            # the cloud unreadable: its last figures, marked with their age
            stale = {**healthy, "cloud_send": {**healthy["cloud_send"], "available": False,
                                               "age_s": 12.3, "last_error": "TimeoutError"}}
            got = await page.evaluate(HOPS, stale)
            assert got["note"] == "cloud figures 12 s old" and got["noteTone"] == "warn"
            # never read: every cloud figure unknown, none made up
            unknown = {"cloud_send": {"available": False, "age_s": None, "video": None,
                                      "fetch_failures": 3, "last_error": "Unavailable"}}
            got = await page.evaluate(HOPS, unknown)
            assert got["note"] == "cloud figures unavailable"
            assert {t for t, _ in got["cloud"].values()} == {"—"}, got
            assert {t for t, _ in got["page"].values()} == {"—"}, got
            assert page.errors == []
