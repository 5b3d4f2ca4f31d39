"""Forward the cloud's log lines to connected clients as ``logs`` messages.

A line logged while a control connection's work runs (``tenancy.current_connection`` set)
goes to that connection only; app-wide lines (startup, plain HTTP requests, anything
outside a connection) go to every client; lines logged with ``extra=OPERATOR_ONLY`` (about
other clients: their addresses, refusals) go to no client, only to the process's own log.
"""

from __future__ import annotations

import collections
import logging

from scope_relay.cloud.control.tenancy import current_connection

LOG_FORMAT = "%(asctime)s - %(name)s - %(levelname)s - %(message)s"
#: 50 lines of this size stay below the 4 MiB message limit even when every character
#: takes JSON's longest form (6 bytes: a control character's \u escape).
MAX_LINE_CHARS = 12_000
#: ``logger.warning(..., extra=OPERATOR_ONLY)``: a line for the operator, never for clients
OPERATOR_ONLY = {"operator_only": True}


class LogHub(logging.Handler):
    """A logging handler fanning formatted lines out to bounded per-client buffers.

    Lines carry ``" - LEVEL - "`` so Scope's client re-emits them at the right level. A
    line logged on behalf of a connection (see :mod:`.tenancy`) reaches only the buffers
    subscribed for that connection.
    """

    def __init__(self, max_lines: int = 500):
        super().__init__(logging.INFO)
        self.setFormatter(logging.Formatter(LOG_FORMAT))
        self._buffers: set[LogBuffer] = set()
        self.max_lines = max_lines
        self.dropped_by_gone = 0  # drops of buffers already unsubscribed

    def emit(self, record: logging.LogRecord) -> None:
        if not self._buffers or getattr(record, "operator_only", False):
            return
        owner = current_connection.get()  # read in the thread that logs, in its context
        buffers = [b for b in list(self._buffers) if owner is None or b.owner == owner]
        if not buffers:
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
        for buffer in buffers:
            buffer.append(line)

    def subscribe(self, owner: str | None = None) -> LogBuffer:
        """A buffer for one client: app-wide lines, and the lines of connection ``owner``."""
        buffer = LogBuffer(self.max_lines, owner)
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
    def __init__(self, max_lines: int, owner: str | None = None):
        self._lines: collections.deque[str] = collections.deque(maxlen=max_lines)
        self.owner = owner
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
