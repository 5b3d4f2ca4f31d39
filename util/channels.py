"""Sending one control message on a WebRTC data channel that may be closing or gone."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from scope_relay.protocol.messages import encode


def send_message(channel: Any, message: Mapping[str, Any], log: logging.Logger, who: str,
                 *, level: int = logging.INFO) -> bool:
    """Send ``message`` on ``channel`` if it is open; True once sent.

    False, never an exception, when there is no channel, it is not open, or the send fails
    (a closing channel: logged as ``who`` at ``level``): a message that cannot go is for the
    caller to count or report, never the end of its session.
    """
    if channel is None or channel.readyState != "open":
        return False
    try:
        channel.send(encode(message))
    except Exception as exc:  # a closing channel
        log.log(level, "%s: could not send %s: %s", who, message.get("type"), exc)
        return False
    return True
