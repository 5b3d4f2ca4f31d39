"""Per-connection budgets: a token bucket on every control message, the record of how long
a socket has been held back, and caps on control sockets per address and per key.

Pure bookkeeping (no I/O): :class:`~.control_channel.ControlChannel` and the ``/ws``
handler in :mod:`.app` act on the answers.
"""

from __future__ import annotations

import collections
import hashlib
import math
import time
from collections.abc import Callable

Clock = Callable[[], float]


class TokenBucket:
    """``rate`` tokens a second, holding at most ``burst``; starts full."""

    def __init__(self, rate: float, burst: float, clock: Clock = time.monotonic):
        if not 0 < rate < math.inf or not 1 <= burst < math.inf:
            raise ValueError(f"a token bucket needs rate > 0 and burst >= 1, got {rate}, {burst}")
        self.rate = rate
        self.burst = float(burst)
        self._clock = clock
        self._tokens = self.burst
        self._at = clock()

    def take(self) -> float:
        """Take one token and return 0.0, or, when there is none, take nothing and return
        how many seconds until there will be one."""
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens >= 1.0 - 1e-9:  # (after sleeping the wait it named, float error)
            self._tokens = max(0.0, self._tokens - 1.0)
            return 0.0
        return (1.0 - self._tokens) / self.rate


class ThrottleMeter:
    """Seconds a socket spent held back (a message waiting for a token) within the last
    ``window`` seconds. Its entries are at most one per held-back message, and those are
    admitted at the bucket's rate, so the record stays small (``rate × window``)."""

    def __init__(self, window: float, clock: Clock = time.monotonic):
        self.window = window
        self._clock = clock
        self._waits: collections.deque[tuple[float, float]] = collections.deque()
        self._sum = 0.0

    def add(self, seconds: float) -> float:
        """Record a wait of ``seconds`` starting now; returns the total within the window,
        this wait included."""
        now = self._clock()
        self._forget(now)
        self._waits.append((now, seconds))
        self._sum += seconds
        return self._sum

    def total(self) -> float:
        self._forget(self._clock())
        return self._sum

    def _forget(self, now: float) -> None:
        while self._waits and self._waits[0][0] < now - self.window:
            self._sum -= self._waits.popleft()[1]
        if not self._waits:
            self._sum = 0.0  # no float drift left over


class SocketCaps:
    """How many control sockets each address and each key holds, against their caps
    (``None``: no cap)."""

    def __init__(self, per_address: int | None, per_key: int | None):
        self.per_address = per_address
        self.per_key = per_key
        self.by_address: collections.Counter[str] = collections.Counter()
        self.by_key: collections.Counter[str] = collections.Counter()
        #: upgrades refused, by the cap that refused them ("address", "key")
        self.refused: collections.Counter[str] = collections.Counter()

    def admit(self, address: str, key: str) -> str | None:
        """Count one more socket for ``address`` and ``key`` and return ``None``, or
        count nothing and return which cap refuses it (``"address"`` or ``"key"``)."""
        if self.per_address is not None and self.by_address[address] >= self.per_address:
            self.refused["address"] += 1
            return "address"
        if self.per_key is not None and self.by_key[key] >= self.per_key:
            self.refused["key"] += 1
            return "key"
        self.by_address[address] += 1
        self.by_key[key] += 1
        return None

    def release(self, address: str, key: str) -> None:
        for counter, name in ((self.by_address, address), (self.by_key, key)):
            counter[name] -= 1
            if counter[name] <= 0:
                del counter[name]  # an address that left holds no memory

    @property
    def refused_total(self) -> int:
        return sum(self.refused.values())


def key_identity(token: bytes | None) -> str:
    """What a presented API key is counted under: a short hash (the key itself is never
    kept), or ``"anonymous"`` without one."""
    if token is None:
        return "anonymous"
    return "key:" + hashlib.sha256(token).hexdigest()[:16]
