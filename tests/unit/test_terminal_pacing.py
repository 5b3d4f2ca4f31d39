"""The pace of what the relay prints about an unreachable cloud, and the page's figures at
the relay, on a clock the test moves."""

from __future__ import annotations

import logging

import pytest

from scope_relay.local.cloud_link.outage import OutageReport, close_reason
from scope_relay.local.sessions.figures import ArrivalFigures


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_an_outage_is_reported_at_its_start_then_rarely(caplog):
    caplog.set_level(logging.DEBUG)
    clock = Clock()
    report = OutageReport("ws://cloud/ws", clock)
    for _ in range(601):  # 10 minutes of one attempt a second
        report.failed("nothing answers at cloud:8001 (connection refused)")
        clock.now += 1.0
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 7, warnings  # at 0, then after 10 s, 30 s, 1, 2, 5 min, 10 min
    assert "retrying in the background" in warnings[0]
    assert "after 10 s (11 attempts)" in warnings[1]
    assert report.recovered() == pytest.approx(601)
    caplog.clear()
    report.failed("again")  # a new outage is reported at once
    assert [r.levelno for r in caplog.records] == [logging.WARNING]


def test_a_closed_socket_says_why():
    assert "the cloud app exited" in close_reason(1006)
    assert "the cloud app exited" in close_reason(None)
    assert "shut down" in close_reason(1001)
    assert "code 4000" in close_reason(4000)


def test_fps_and_generator_speed_as_the_page_computes_them():
    clock = Clock()
    figures = ArrivalFigures(24.0, clock=clock)
    assert figures.figures(paused=False, camera_driven=False)["fps_received"] is None
    for _ in range(24 * 10):  # 10 s at 18 frames a second: 0.75x real time
        figures.video_arrived()
        clock.now += 1 / 18
    out = figures.figures(paused=False, camera_driven=False)
    assert out["fps_received"] == pytest.approx(18, abs=0.6)
    assert out["generator_speed"] == pytest.approx(0.75, abs=0.03)
    assert figures.figures(paused=True, camera_driven=False)["generator_speed"] is None
    assert figures.figures(paused=False, camera_driven=True)["generator_speed"] is None
    figures.restart()  # after a pause: no verdict until 6 s of media again
    for _ in range(24 * 3):
        figures.video_arrived()
        clock.now += 1 / 24
    assert figures.figures(paused=False, camera_driven=False)["generator_speed"] is None
