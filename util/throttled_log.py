"""A warning that a flood must not turn into a flood of log lines."""

from __future__ import annotations

import logging
import math
import time
from typing import Any


class ThrottledWarning:
    """One line, then at most one per ``interval`` s, saying how many were held back: the
    sender is told of each refusal, and a relay re-emits the cloud's log in its terminal,
    so 30 refusals a second must not be 30 lines."""

    def __init__(self, log: logging.Logger, interval: float,
                 held: str = "more since the last report") -> None:
        self._log = log
        self.interval = interval
        self._held_words = held
        self._last = -math.inf
        #: warnings held back since the last line
        self.held = 0

    def warning(self, message: str, *args: Any) -> None:
        """``log.warning(message, *args)``, with `` (N <held>)`` after it when N were held."""
        now = time.monotonic()
        if now - self._last < self.interval:
            self.held += 1
            return
        more = f" ({self.held} {self._held_words})" if self.held else ""
        self._last, self.held = now, 0
        self._log.warning(message + "%s", *args, more)
