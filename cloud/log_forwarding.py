"""Forward the cloud's log lines to connected clients as ``logs`` messages."""

from __future__ import annotations

import collections
import logging

LOG_FORMAT = "%(asctime)s - %(name)s - %(levelname)s - %(message)s"
#: 50 lines of this size stay below the 4 MiB message limit even when every character
#: takes JSON's longest form (6 bytes: a control character's \u escape).
MAX_LINE_CHARS = 12_000


class LogHub(logging.Handler):
    """A logging handler fanning formatted lines out to bounded per-client buffers.

    Lines carry ``" - LEVEL - "`` so Scope's client re-emits them at the right level.
    """

    def __init__(self, max_lines: int = 500):
        super().__init__(logging.INFO)
        self.setFormatter(logging.Formatter(LOG_FORMAT))
        self._buffers: set[LogBuffer] = set()
        self.max_lines = max_lines
        self.dropped_by_gone = 0  # drops of buffers already unsubscribed

    def emit(self, record: logging.LogRecord) -> None:
        if not self._buffers:
            return
        try:
            line = self.format(record)
        except Exception:
            return
        if len(line) > MAX_LINE_CHARS:
            line = line[:MAX_LINE_CHARS] + " …[truncated]"
        # a lone surrogate (a client's own escaped text, logged) would force the whole batch
        # into \u escapes: written out as text instead, every line stays valid UTF-8
        line = line.encode("utf-8", "backslashreplace").decode("utf-8")
        for buffer in list(self._buffers):
            buffer.append(line)

    def subscribe(self) -> LogBuffer:
        buffer = LogBuffer(self.max_lines)
        self._buffers.add(buffer)
        return buffer

    def unsubscribe(self, buffer: LogBuffer) -> None:
        if buffer in self._buffers:
            self._buffers.discard(buffer)
            self.dropped_by_gone += buffer.dropped

    @property
    def dropped(self) -> int:
        """Lines dropped because a client read slower than the cloud logged."""
        return self.dropped_by_gone + sum(b.dropped for b in list(self._buffers))


class LogBuffer:
    def __init__(self, max_lines: int):
        self._lines: collections.deque[str] = collections.deque(maxlen=max_lines)
        self.dropped = 0

    def append(self, line: str) -> None:  # may run on any thread (runner logs too)
        if len(self._lines) == self._lines.maxlen:
            self.dropped += 1
        self._lines.append(line)

    def drain(self) -> list[str]:
        lines = []
        while self._lines:
            lines.append(self._lines.popleft())
        return lines
