"""OSC input: ``/param/<name> <value>`` from a performer's gear (TouchDesigner, Resolume, a
phone OSC app) becomes a parameter update of the session OSC drives (``osc_target.py``:
the pinned one, else the newest).

Each value is checked against the running chain's parameter schema, as the cloud publishes
it (``GET /api/v1/pipelines``), the same way the page checks its inputs, so gear that sends
garbage is refused here and counted instead of reaching the model. Accepted updates take
the same path as the page's own ``parameters`` messages (``on_parameters``): forwarded to
the cloud and remembered for a cloud-hop reconnect.

Nothing here blocks the event loop, whatever arrives (anyone on the LAN may send with
``--osc-host 0.0.0.0``):

- **Timetags.** A bundle due within :data:`LOOKAHEAD` is held until its time
  (``loop.call_at``, never a sleep); one due now, in the past or "immediately" is applied
  at once. One further ahead is applied at once too, and counted (``timetag_ahead``): a
  timetag seconds or years ahead is a clock that disagrees with ours (or an attack), not
  a performance cue, and dropping it would silence gear whose clock runs ahead.
- **Rate.** Values wait in one slot per parameter (a newer value replaces the one not yet
  sent: ``coalesced``) and go to the cloud as one ``parameters`` message at most
  :data:`SEND_RATE` times a second (``updates_sent``), so a flood costs the cloud at most
  that, and the last value always wins.
- **Bad packets.** Malformed packets, and bundles nested beyond
  ``osc_packets.MAX_DEPTH``, are dropped whole and counted (``malformed``, ``too_deep``),
  with at most one short log line per kind every :data:`LOG_INTERVAL` seconds.
- **Budget.** At most :data:`MESSAGE_RATE` messages a second are parsed (bursts of
  :data:`MESSAGE_BURST`); packets beyond it are dropped unread and counted (``dropped``),
  so a flood cannot take the loop from the media.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import math
import socket
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from scope_relay.protocol.parameters import coerce_parameter, finite_number
from scope_relay.util.tasks import OwnedTasks
from scope_relay.util.throttled_log import ThrottledWarning

from .osc_packets import MalformedPacket, PacketTooDeep, TimedMessage, parse_packet
from .osc_target import OscTarget, Owner

logger = logging.getLogger(__name__)

PREFIX = "/param/"
#: a bundle due at most this far ahead is held until its time; further ahead: at once
LOOKAHEAD = 1.0
#: messages held for their timetag; beyond this new ones are dropped and counted
MAX_SCHEDULED = 256
#: parameters waiting for the next send; values of further names are dropped and counted
MAX_PENDING = 256
#: ``parameters`` messages to the cloud per second, at most
SEND_RATE = 60.0
#: OSC messages parsed per second, sustained, and in a burst
MESSAGE_RATE = 2000.0
MESSAGE_BURST = 10_000.0
#: one log line per kind of trouble per this many seconds (the rest are counted in it)
LOG_INTERVAL = 10.0
#: ``/tempo/bpm <number>``, ``/tempo/quantize <off|beat|bar|2bars|4bars>``, ``/tempo/tap``
TEMPO_PREFIX = "/tempo/"
TEMPO_ADDRESSES = {"/tempo/bpm": "bpm", "/tempo/quantize": "quantize", "/tempo/tap": "tap"}
#: tempo messages waiting for the send loop (taps are not coalesced); beyond: dropped, counted
MAX_TEMPO_WAITING = 64
#: how long the cloud's pipeline list is trusted before it is asked again
SCHEMA_TTL = 10.0
#: the socket's receive buffer: gear sends bursts (a bundle per frame, a fader sweep)
RECEIVE_BUFFER = 1 << 20

#: ``GET /api/v1/pipelines`` through the cloud connection: ``(status, body)``
FetchPipelines = Callable[[], Awaitable[tuple[int, Any]]]
#: the relay's tempo (``TempoManager.update``): ``ValueError`` for what it refuses
TempoUpdate = Callable[[dict[str, Any]], Awaitable[Any]]


def coerce(name: str, value: Any, spec: Mapping[str, Any]) -> Any:
    """``value`` as the parameter's schema wants it; ``ValueError`` saying why not.

    The same rules as the page's inputs: numbers finite and in range, integers whole,
    booleans from true/false or 0/1 (what most OSC senders have), strings as they are, a
    prompt from a string (weight 1)."""
    kind = spec.get("type")
    if kind == "integer" and finite_number(value) is not None and value != int(value):
        raise ValueError(f"{name} must be a whole number")  # OSC floats: never truncated
    if kind == "boolean" and not isinstance(value, bool) and value in (0, 1):
        value = bool(value)  # what most OSC senders have
    elif kind == "prompts":
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"{name} must be a non-empty prompt text")
        value = [{"text": value, "weight": 1.0}]
    elif kind not in ("number", "integer", "boolean", "string"):
        raise ValueError(f"{name} has a type OSC cannot set ({kind!r})")
    return coerce_parameter(name, value, spec)


@dataclass
class OscCounts:
    #: OSC messages in the packets parsed
    received: int = 0
    #: values sent to the cloud
    forwarded: int = 0
    #: ``parameters`` messages sent to the cloud (at most SEND_RATE a second)
    updates_sent: int = 0
    #: values replaced by a newer one of the same parameter before they were sent
    coalesced: int = 0
    #: not /param/<name> with one value, unknown name, or a value the schema refuses
    refused: int = 0
    #: values with no browser session to drive
    no_session: int = 0
    #: over the budget (packets), too many held for their timetag or waiting (messages)
    dropped: int = 0
    #: packets that are not OSC
    malformed: int = 0
    #: packets with bundles nested beyond osc_packets.MAX_DEPTH
    too_deep: int = 0
    #: messages held for a timetag at most LOOKAHEAD ahead
    scheduled: int = 0
    #: messages timetagged more than LOOKAHEAD ahead, applied at once
    timetag_ahead: int = 0


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, received: Callable[[bytes], None]):
        self._received = received

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self._received(data)

    def error_received(self, exc: Exception) -> None:
        logger.debug("OSC socket: %s", exc)


class OscInput:
    """A UDP OSC server feeding ``target``'s session; ``start()``, then ``close()``."""

    def __init__(self, target: OscTarget | Callable[[], Owner | None],
                 fetch_pipelines: FetchPipelines, *, host: str = "127.0.0.1", port: int = 9000,
                 tempo: TempoUpdate | None = None):
        self.host = host
        self.port = port
        self.counts = OscCounts()
        self._target = target
        self._fetch = fetch_pipelines
        self._pending: dict[str, Any] = {}  # name -> latest value not yet sent
        self._wake = asyncio.Event()
        self._timers: set[asyncio.TimerHandle] = set()
        self._tokens = MESSAGE_BURST
        self._tokens_at = time.monotonic()
        #: one throttled warning per kind of trouble (dropped, malformed, refused, ...)
        self._warnings: dict[str, ThrottledWarning] = {}
        self._tempo = tempo
        self._tempo_waiting: collections.deque[TimedMessage] = collections.deque()
        self._schemas: dict[str, dict[str, Any]] = {}
        self._schemas_at = -math.inf
        self._transport: asyncio.DatagramTransport | None = None
        self._tasks = OwnedTasks()

    async def start(self) -> None:
        """Bind (an ``OSError`` naming the port if it is taken) and start the sender."""
        loop = asyncio.get_running_loop()
        try:
            self._transport, _ = await loop.create_datagram_endpoint(
                lambda: _Protocol(self._received), local_addr=(self.host, self.port))
        except OSError as exc:  # say which port: the OS does not, for UDP
            raise OSError(exc.errno, f"OSC port {self.port}: {exc.strerror}") from exc
        sock = self._transport.get_extra_info("socket")
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
        except OSError:  # the OS's cap applies; the default still works
            pass
        self.port = self._transport.get_extra_info("sockname")[1]  # the real one when given 0
        self._tasks.spawn(self._send_loop())

    async def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        await self._tasks.cancel_all()

    def stats(self) -> dict[str, int]:
        out = dict(vars(self.counts))
        if isinstance(self._target, OscTarget):
            out["pinned"] = int(self._target.pinned)
        return out

    # --- receiving (on the event loop: quick, never waits) -------------------------------
    def _received(self, data: bytes) -> None:
        if not self._spend_token():
            self.counts.dropped += 1
            self._warn("dropped", "OSC: over %.0f messages/s, packets dropped",
                              MESSAGE_RATE)
            return
        try:
            messages = parse_packet(data)
        except PacketTooDeep as exc:
            self.counts.too_deep += 1
            self._warn("too_deep", "OSC packet dropped: %s", exc)
            return
        except MalformedPacket as exc:
            self.counts.malformed += 1
            self._warn("malformed", "OSC packet dropped: %s", exc)
            return
        self._tokens -= max(0, len(messages) - 1)  # the packet's first was spent above
        self.counts.received += len(messages)
        now = time.time()
        loop = asyncio.get_running_loop()
        for message in messages:
            ahead = -math.inf if message.at is None else message.at - now
            if ahead <= 0:
                self._take(message)
            elif ahead > LOOKAHEAD:
                self.counts.timetag_ahead += 1
                self._take(message)
            elif len(self._timers) >= MAX_SCHEDULED:
                self.counts.dropped += 1
                self._warn("dropped", "OSC: %d messages already wait for their "
                                  "timetag, more dropped", MAX_SCHEDULED)
            else:
                self.counts.scheduled += 1
                self._schedule(loop, loop.time() + ahead, message)

    def _spend_token(self) -> bool:
        now = time.monotonic()
        self._tokens = min(MESSAGE_BURST, self._tokens + (now - self._tokens_at) * MESSAGE_RATE)
        self._tokens_at = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True

    def _schedule(self, loop: asyncio.AbstractEventLoop, when: float,
                  message: TimedMessage) -> None:
        def due() -> None:
            self._timers.discard(timer)
            self._take(message)

        timer = loop.call_at(when, due)
        self._timers.add(timer)

    def _take(self, message: TimedMessage) -> None:
        """A message due now: into its parameter's slot for the next send (a tempo message
        into the tempo queue: the relay's beat, no session needed)."""
        if message.address.startswith(TEMPO_PREFIX) and self._tempo is not None:
            if len(self._tempo_waiting) >= MAX_TEMPO_WAITING:
                self.counts.dropped += 1
                self._warn("dropped", "OSC: %d tempo messages already wait, more dropped",
                                  MAX_TEMPO_WAITING)
                return
            self._tempo_waiting.append(message)
            self._wake.set()
            return
        if not message.address.startswith(PREFIX) or len(message.args) != 1:
            self._refuse(message.address, "expected /param/<name> with one value")
            return
        name = message.address[len(PREFIX):]
        if name in self._pending:
            self.counts.coalesced += 1
        elif len(self._pending) >= MAX_PENDING:
            self.counts.dropped += 1
            self._warn("dropped", "OSC: %d parameters already wait, more dropped",
                              MAX_PENDING)
            return
        self._pending[name] = message.args[0]
        self._wake.set()

    # --- sending (one owned task, at most SEND_RATE messages a second) -------------------
    async def _send_loop(self) -> None:
        loop = asyncio.get_running_loop()
        next_send = -math.inf
        while True:
            await self._wake.wait()
            if (wait := next_send - loop.time()) > 0:
                await asyncio.sleep(wait)  # the rate limit: values meanwhile coalesce
            self._wake.clear()
            while self._tempo_waiting:
                tempo_message = self._tempo_waiting.popleft()
                try:
                    await self._handle_tempo(tempo_message.address, tempo_message.args)
                except Exception as exc:  # a bug must not end OSC input
                    self._warn("failed", "OSC tempo update failed: %s: %.200s",
                                      type(exc).__name__, exc)
            batch, self._pending = self._pending, {}
            next_send = loop.time() + 1 / SEND_RATE
            try:
                await self._send(batch)
            except Exception as exc:  # a bug or a cloud hiccup must not end OSC input
                self._warn("failed", "OSC update failed: %s: %.200s",
                                  type(exc).__name__, exc)

    async def _handle_tempo(self, address: str, args: Sequence[Any]) -> None:
        """The relay's tempo, not a session's parameter."""
        assert self._tempo is not None
        field = TEMPO_ADDRESSES.get(address)
        if field is None or len(args) != (0 if field == "tap" else 1):
            self._refuse(address, "expected /tempo/bpm <n>, /tempo/quantize <mode> or /tempo/tap")
            return
        try:
            await self._tempo({field: True if field == "tap" else args[0]})
        except ValueError as exc:
            self._refuse(address, str(exc))
            return
        self.counts.forwarded += 1

    async def _send(self, batch: dict[str, Any]) -> None:
        owner = self._target()
        if owner is None:
            self.counts.no_session += len(batch)
            return
        params = await self._chain_params(owner.pipeline_ids)
        updates: dict[str, Any] = {}
        for name, value in batch.items():
            spec = params.get(name)
            if spec is None:
                self._refuse(PREFIX + name, f"the running pipeline has no parameter {name!r}")
                continue
            try:
                updates[name] = coerce(name, value, spec)
            except ValueError as exc:
                self._refuse(PREFIX + name, str(exc))
        if updates:
            owner.on_parameters(json.dumps(updates), updates, source="osc")
            self.counts.forwarded += len(updates)
            self.counts.updates_sent += 1

    def _warn(self, kind: str, message: str, *args: Any) -> None:
        """At most one line per kind of trouble per :data:`LOG_INTERVAL`, counting the rest."""
        warning = self._warnings.get(kind)
        if warning is None:
            warning = self._warnings[kind] = ThrottledWarning(logger, LOG_INTERVAL)
        warning.warning(message, *args)

    def _refuse(self, address: str, why: str) -> None:
        """Counted each time; logged at most once per :data:`LOG_INTERVAL` (gear sending 30
        a second must not flood the terminal)."""
        self.counts.refused += 1
        self._warn("refused", "OSC %.60s refused: %.120s", address, why)

    async def _chain_params(self, pipeline_ids: list[str]) -> dict[str, Any]:
        """The chain's parameters, merged in chain order (a later pipeline's spec wins)."""
        stale = time.monotonic() - self._schemas_at > SCHEMA_TTL
        if stale or any(pid not in self._schemas for pid in pipeline_ids):
            status, body = await self._fetch()
            if status < 400 and isinstance(body, dict):
                self._schemas = {p["id"]: p.get("params") or {} for p in body.get("pipelines", [])
                                 if isinstance(p, dict) and "id" in p}
                self._schemas_at = time.monotonic()
        merged: dict[str, Any] = {}
        for pid in pipeline_ids:
            merged.update(self._schemas.get(pid, {}))
        return merged
