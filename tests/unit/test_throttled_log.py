"""util/throttled_log.py: a flood of warnings is one line per interval, with a count."""

from __future__ import annotations

import logging

from scope_relay.util import throttled_log
from scope_relay.util.throttled_log import ThrottledWarning

log = logging.getLogger("test_throttled_log")


def test_one_line_per_interval_then_how_many_were_held(caplog, monkeypatch):
    now = [100.0]
    monkeypatch.setattr(throttled_log.time, "monotonic", lambda: now[0])
    warn = ThrottledWarning(log, 10.0, held="more refused")
    with caplog.at_level(logging.WARNING, logger="test_throttled_log"):
        for _ in range(30):
            warn.warning("s1: refused %s", "volume")
        assert [r.getMessage() for r in caplog.records] == ["s1: refused volume"]
        assert warn.held == 29
        now[0] += 9.9
        warn.warning("s1: refused %s", "volume")
        assert len(caplog.records) == 1
        now[0] += 0.2
        warn.warning("s1: refused %s", "speed")
    assert caplog.records[-1].getMessage() == "s1: refused speed (30 more refused)"
    assert warn.held == 0
