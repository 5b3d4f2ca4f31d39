"""The cloud's sender figures at the relay (local/cloud_link/cloud_stats.py): read without
waiting, fetched at most once a second, served stale with their age, failures counted and
shown; and the hop bitrates computed from byte counters (local/sessions/figures.py)."""

from __future__ import annotations

import asyncio
from typing import Any

from scope_relay.local.cloud_link.cloud_stats import CloudSendStats
from scope_relay.local.sessions.figures import ArrivalFigures, HopRates

VIDEO_SEND = {"plis": 2, "nacks": 1, "keyframes": 3, "target_bitrate": 900_000,
              "estimate_bitrate": 1_200_000, "pacer_queue_delay_ms": 4.0}


class FakeCloud:
    """The control socket's ``api("GET", "/api/v1/stats")``: answers when released."""

    def __init__(self) -> None:
        self.calls = 0
        self.fail: Exception | None = None
        self.status = 200
        self.release = asyncio.Event()
        self.release.set()

    async def fetch(self) -> tuple[int, dict[str, Any]]:
        self.calls += 1
        await self.release.wait()
        if self.fail is not None:
            raise self.fail
        return self.status, {"sessions": [
            {"sessionId": "cloud-a", "video_send": VIDEO_SEND, "other": 1},
            {"sessionId": "cloud-b", "video_send": {"plis": 0},
             "audio_send": {"packets": 5}}]}


async def until(condition: Any, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.001)


async def test_first_read_does_not_wait_then_the_figures_arrive() -> None:
    cloud, now = FakeCloud(), [100.0]
    cache = CloudSendStats(cloud.fetch, clock=lambda: now[0])
    first = cache.figures("cloud-a")
    assert first["video"] is None and first["available"] is False and first["age_s"] is None
    await until(lambda: cache.fetches == 1)
    now[0] += 0.25
    got = cache.figures("cloud-a")
    assert got["available"] is True and got["video"] == VIDEO_SEND and got["audio"] is None
    assert got["age_s"] == 0.25
    assert cache.figures("cloud-b")["audio"] == {"packets": 5}
    unknown = cache.figures("cloud-gone")
    assert unknown["available"] is False and unknown["video"] is None
    assert cache.figures(None)["video"] is None
    await cache.close()


async def test_at_most_one_fetch_a_second_and_none_while_one_is_in_flight() -> None:
    cloud, now = FakeCloud(), [0.0]
    cache = CloudSendStats(cloud.fetch, clock=lambda: now[0])
    cache.figures("cloud-a")
    await until(lambda: cache.fetches == 1)
    for _ in range(20):  # a page polling, a script and a scrape, all within the second
        now[0] += 0.04
        cache.figures("cloud-a")
    await asyncio.sleep(0.01)
    assert cloud.calls == 1
    now[0] = 1.0
    cloud.release.clear()  # a slow cloud: the reader still gets the last value at once
    slow = cache.figures("cloud-a")
    assert slow["video"] == VIDEO_SEND and slow["age_s"] == 1.0
    await until(lambda: cloud.calls == 2)
    now[0] = 5.0  # long past the interval, but the fetch is still in flight: no second one
    assert cache.figures("cloud-a")["age_s"] == 5.0
    await asyncio.sleep(0.01)
    assert cloud.calls == 2
    cloud.release.set()
    await until(lambda: cache.fetches == 2)
    assert cache.figures("cloud-a")["age_s"] == 0.0
    await cache.close()


async def test_a_failure_is_counted_and_shown_and_the_last_value_kept() -> None:
    cloud, now = FakeCloud(), [0.0]
    cache = CloudSendStats(cloud.fetch, clock=lambda: now[0])
    cache.figures("cloud-a")
    await until(lambda: cache.fetches == 1)
    cloud.fail = ConnectionError("cloud connection is down")
    now[0] = 2.0
    cache.figures("cloud-a")
    await until(lambda: cache.failures == 1)
    got = cache.figures("cloud-a")
    assert got["available"] is False and got["fetch_failures"] == 1
    assert got["last_error"] == "ConnectionError: cloud connection is down"
    assert got["video"] == VIDEO_SEND and got["age_s"] == 2.0  # stale, and says how stale
    cloud.fail, cloud.status = None, 503  # an error reply is a failure too
    now[0] = 3.5
    cache.figures("cloud-a")
    await until(lambda: cache.failures == 2)
    assert "503" in (cache.figures("cloud-a")["last_error"] or "")
    cloud.status = 200  # and it recovers
    now[0] = 5.0
    cache.figures("cloud-a")
    await until(lambda: cache.fetches == 2)
    got = cache.figures("cloud-a")
    assert got["available"] is True and got["last_error"] is None and got["fetch_failures"] == 2
    await cache.close()


async def test_a_fetch_that_hangs_times_out_as_a_failure() -> None:
    cloud = FakeCloud()
    cloud.release.clear()
    cache = CloudSendStats(cloud.fetch, timeout=0.05)
    cache.figures("cloud-a")
    await until(lambda: cache.failures == 1)
    assert cache.figures("cloud-a")["last_error"] == "TimeoutError"
    await cache.close()


async def test_close_cancels_a_fetch_in_flight() -> None:
    cloud = FakeCloud()
    cloud.release.clear()
    cache = CloudSendStats(cloud.fetch)
    cache.figures("cloud-a")
    await until(lambda: cloud.calls == 1)
    await cache.close()
    assert cache.failures == 0 and cache.fetches == 0


def test_read_outside_the_event_loop_starts_nothing() -> None:
    cloud = FakeCloud()
    cache = CloudSendStats(cloud.fetch)
    assert cache.figures("cloud-a")["video"] is None
    assert cloud.calls == 0


def test_hop_rates_over_at_least_a_second_of_samples() -> None:
    now = [0.0]
    rates = HopRates(clock=lambda: now[0])
    assert rates.rates({"cloud": 0, "page": None}) == {"cloud": None, "page": None}
    now[0] = 0.5
    assert rates.rates({"cloud": 50_000, "page": None})["cloud"] is None  # < 1 s of history
    now[0] = 1.0
    assert rates.rates({"cloud": 125_000, "page": 0}) == {"cloud": 1_000_000, "page": None}
    now[0] = 2.0  # the newest sample >= 1 s old is the one at 1.0
    assert rates.rates({"cloud": 250_000, "page": 62_500})["page"] == 500_000
    now[0] = 3.0  # the counter went back (a rebuilt hop counts anew): no figure, not negative
    assert rates.rates({"cloud": 10, "page": 125_000})["cloud"] is None


def test_hop_figures_say_how_the_page_hop_is_made() -> None:
    now = [0.0]
    figures = ArrivalFigures(30.0, clock=lambda: now[0])

    def session(forwarded: int, sent: int, fwd_bytes: int, enc_bytes: int | None,
                rx_bytes: int) -> dict[str, Any]:
        video_send: dict[str, Any] = {"plis": 0}
        if enc_bytes is not None:
            video_send["encoded_bytes"] = enc_bytes
        return {"receive": {"video": {"payload_bytes": rx_bytes}}, "video_send": video_send,
                "video_forward": {"frames": forwarded, "bytes": fwd_bytes},
                "video_frames_sent": sent}

    assert figures.hop_figures(session(0, 0, 0, None, 0))["page_video_mode"] is None
    now[0] = 1.0
    got = figures.hop_figures(session(30, 30, 100_000, None, 110_000))
    assert got == {"cloud_video_bitrate": 880_000, "page_video_bitrate": 800_000,
                   "page_video_mode": "forwarded"}
    now[0] = 2.0
    got = figures.hop_figures(session(30, 60, 100_000, 50_000, 220_000))
    assert got["page_video_mode"] == "mixed" and got["page_video_bitrate"] == 400_000
    assert figures.hop_figures(session(0, 60, 0, 10, 0))["page_video_mode"] == "re-encoded"
