"""util/channels.py: a message on a data channel that is open, closed or closing."""

from __future__ import annotations

import json
import logging

import pytest

from scope_relay.util.channels import send_message

log = logging.getLogger("test_channels")


class StandInChannel:
    """What send_message uses of an aiortc RTCDataChannel."""

    def __init__(self, state: str, fails: bool = False) -> None:
        self.readyState = state
        self.fails = fails
        self.sent: list[str] = []

    def send(self, text: str) -> None:
        if self.fails:
            raise ConnectionError("the transport is closing")
        self.sent.append(text)


def test_an_open_channel_gets_the_encoded_message():
    channel = StandInChannel("open")
    assert send_message(channel, {"type": "notice", "n": 1}, log, "s1")
    assert [json.loads(t) for t in channel.sent] == [{"type": "notice", "n": 1}]


@pytest.mark.parametrize("channel", [None, StandInChannel("connecting"), StandInChannel("closed")])
def test_no_open_channel_is_false_and_sends_nothing(channel):
    assert not send_message(channel, {"type": "notice"}, log, "s1")
    assert channel is None or channel.sent == []


def test_a_failing_send_is_false_and_logged_at_the_level_asked(caplog):
    with caplog.at_level(logging.INFO, logger="test_channels"):
        assert not send_message(StandInChannel("open", fails=True), {"type": "notice"}, log,
                                "s1", level=logging.WARNING)
    (record,) = caplog.records
    assert record.levelno == logging.WARNING
    assert record.getMessage() == "s1: could not send notice: the transport is closing"
