"""Where a start-up's time went, peer by peer: when each aiortc peer in this process began
and finished ICE and DTLS, when its first DTLS and SRTP datagrams arrived and its first
RTP packet was decrypted, and which retransmit timers fired (a STUN check resent, a DTLS
flight resent on OpenSSL's timer), and when the event loop stalled (every peer of a test
shares one loop: a ``gc.collect()`` or a codec's set-up there holds up all of them). A
slow start then names its phase: a ~1 s gap with a ``dtls_timeout`` is a lost or ignored
flight, one with ``stun_resent`` an ICE check, one with a loop stall the loop (``gc``: a
garbage collection took most of it).

Patches aiortc, aioice and pyOpenSSL classes while the recorder is entered (restored on
exit); every peer in the process is recorded, then :meth:`PhaseRecorder.phases` picks
one peer connection's. Used by tests/integration/test_startup.py (in its failure
message) and benchmarks/latency.py (``--phases``)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections.abc import Callable, Iterator
from typing import Any

from aioice import ice, stun
from aiortc import RTCDtlsTransport, RTCIceTransport, RTCPeerConnection
from OpenSSL import SSL

#: the phases in the order a start passes them (``phases()`` keeps this order)
ORDER = ("ice_start", "ice_done", "dtls_start", "first_dtls_in", "dtls_done", "first_srtp_in",
         "first_rtp")
#: a loop callback this much later than asked is a stall (s), and how often one is asked
STALL, TICK = 0.05, 0.01
#: SRTP datagrams noted per connection (to count those that came before DTLS was done)
SRTP_NOTED = 100
#: counted, not timed: how often each happened on the peer (``phases()`` adds ``*_at``, the
#: first time, for the timers)
COUNTED = ("stun_resent", "dtls_timeout", "srtp_before_keys")


class PhaseRecorder:
    """Records every peer's start-up phases while entered (a context manager)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        #: (time, the object it happened on, what happened)
        self.events: list[tuple[float, object, str]] = []
        self._seen: dict[tuple[int, str], int] = {}  # (owner, what) -> times noted
        self._undo: list[tuple[Any, str, Any]] = []
        #: (when the stall began, how long it lasted), s on ``clock``
        self.stalls: list[tuple[float, float]] = []
        #: (when, how long, generation) of each garbage collection of at least :data:`STALL`
        self.collections: list[tuple[float, float, int]] = []
        self._gc_began = 0.0
        self._tick: asyncio.Handle | None = None

    def note(self, owner: object, what: str, *, limit: int | None = None) -> None:
        """Record ``what`` on ``owner`` now; at most ``limit`` times for that pair."""
        if limit is not None:
            key = (id(owner), what)
            seen = self._seen.get(key, 0)
            if seen >= limit:
                return
            self._seen[key] = seen + 1
        self.events.append((self.clock(), owner, what))

    def clear(self) -> None:
        """Forget what was recorded (between trials: the old peers' ids may be reused)."""
        self.events.clear()
        self._seen.clear()
        self.stalls.clear()
        self.collections.clear()

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        now = self.clock()
        if phase == "start":
            self._gc_began = now
        elif now - self._gc_began >= STALL:
            self.collections.append((self._gc_began, now - self._gc_began, info["generation"]))

    def _watch_loop(self, asked: float) -> None:
        """A callback every :data:`TICK`: one that runs :data:`STALL` late was held up."""
        now = self.clock()
        if now - asked > STALL:
            self.stalls.append((asked, now - asked))
        loop = asyncio.get_running_loop()
        self._tick = loop.call_later(TICK, self._watch_loop, self.clock() + TICK)

    def _patch(self, owner: Any, name: str, make: Callable[[Any], Any]) -> None:
        original = owner.__dict__[name]
        self._undo.append((owner, name, original))
        setattr(owner, name, make(original))

    def __enter__(self) -> PhaseRecorder:
        note = self.note

        def timed_start(layer: str, done: str) -> Callable[[Any], Any]:
            """``<layer>_start`` as a transport's ``start()`` begins, ``<layer>_done`` as
            it returns in state ``done`` (else ``<layer>_<its state>``)."""
            def make(original: Any) -> Any:
                async def start(transport: Any, *args: Any, **kwargs: Any) -> None:
                    note(transport, f"{layer}_start")
                    await original(transport, *args, **kwargs)
                    state = transport.state
                    note(transport, f"{layer}_done" if state == done else f"{layer}_{state}")
                return start
            return make

        def first_rtp(original: Any) -> Any:
            async def handle(transport: RTCDtlsTransport, *args: Any, **kwargs: Any) -> None:
                note(transport, "first_rtp", limit=1)
                await original(transport, *args, **kwargs)
            return handle

        def arrival(original: Any) -> Any:
            def data_received(connection: ice.Connection, data: bytes, component: int) -> None:
                if data and 19 < data[0] < 64:
                    note(connection, "first_dtls_in", limit=1)
                elif data and 127 < data[0] < 192:
                    note(connection, "first_srtp_in", limit=1)
                    # against dtls_done: arrived before its keys (the first few tell)
                    note(connection, "srtp_in", limit=SRTP_NOTED)
                original(connection, data, component)
            return data_received

        def stun_retry(original: Any) -> Any:
            def retry(transaction: stun.Transaction) -> None:
                state = vars(transaction)  # its private (name-mangled) attributes
                if state["_Transaction__tries"] and not state["_Transaction__future"].done():
                    note(state["_Transaction__protocol"].receiver, "stun_resent")
                original(transaction)
            return retry

        def dtls_timeout(original: Any) -> Any:
            def handle_timeout(connection: SSL.Connection) -> Any:
                note(connection, "dtls_timeout")
                return original(connection)
            return handle_timeout

        self._patch(RTCIceTransport, "start", timed_start("ice", "completed"))
        self._patch(RTCDtlsTransport, "start", timed_start("dtls", "connected"))
        self._patch(RTCDtlsTransport, "_handle_rtp_data", first_rtp)
        self._patch(ice.Connection, "data_received", arrival)
        self._patch(stun.Transaction, "_Transaction__retry", stun_retry)
        self._patch(SSL.Connection, "DTLSv1_handle_timeout", dtls_timeout)
        gc.callbacks.append(self._on_gc)
        with contextlib.suppress(RuntimeError):  # no running loop: no stalls recorded
            self._tick = asyncio.get_running_loop().call_soon(self._watch_loop, self.clock())
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._on_gc)
        if self._tick is not None:
            self._tick.cancel()
            self._tick = None
        while self._undo:
            owner, name, original = self._undo.pop()
            setattr(owner, name, original)

    def phases(self, pc: RTCPeerConnection | None, since: float) -> dict[str, float]:
        """``pc``'s phases, ms after ``since`` (first occurrence), and the counts of
        :data:`COUNTED` (``stun_resent``, ``dtls_timeout``: timers that fired;
        ``srtp_before_keys``: SRTP that arrived before DTLS was done, which aiortc drops)."""
        if pc is None:
            return {}
        owners = dict(_transports(pc))
        seen: dict[str, float] = {}
        counts = dict.fromkeys(COUNTED, 0)
        srtp_in: list[float] = []
        for at, owner, what in self.events:
            if id(owner) not in owners:
                continue
            if what == "srtp_in":
                srtp_in.append(at)
                continue
            if what in counts:
                counts[what] += 1
                seen.setdefault(f"{what}_at", round((at - since) * 1000, 1))
                continue
            seen.setdefault(what, round((at - since) * 1000, 1))
        if "dtls_done" in seen:
            done = since + seen["dtls_done"] / 1000
            counts["srtp_before_keys"] = sum(1 for at in srtp_in if at < done)
        ordered = {name: seen.pop(name) for name in ORDER if name in seen}
        return {**ordered, **seen, **{k: float(v) for k, v in counts.items() if v}}

    def loop_stalls(self, since: float) -> str:
        """The loop's stalls as ``at+for`` ms after ``since``, each marked ``(gc N)`` where
        a garbage collection of generation N took most of it (``-`` when none)."""
        out = []
        for at, held in self.stalls:
            text = f"{(at - since) * 1000:.0f}+{held * 1000:.0f}"
            inside = [(min(at + held, began + took) - max(at, began), generation)
                      for began, took, generation in self.collections]
            inside = [(overlap, generation) for overlap, generation in inside if overlap > 0]
            if inside and sum(overlap for overlap, _ in inside) > held / 2:
                text += f" (gc {max(inside)[1]})"
            out.append(text)
        return ", ".join(out) or "-"


def _transports(pc: RTCPeerConnection) -> Iterator[tuple[int, object]]:
    """The objects a peer connection's phases are recorded on: its DTLS transports, their
    ICE transports, the ICE connections and the OpenSSL connections under them."""
    dtls = [t.receiver.transport for t in pc.getTransceivers()]
    if pc.sctp is not None:
        dtls.append(pc.sctp.transport)
    for transport in dtls:
        for owner in (transport, transport.transport, transport.transport._connection,
                      getattr(transport, "_ssl", None)):
            if owner is not None:
                yield id(owner), owner


def line(phases: dict[str, float]) -> str:
    """One peer's phases as a short line: ``ice_start 12, ice_done 40, ...``."""
    return ", ".join(f"{name} {value:.0f}" for name, value in phases.items()) or "-"
