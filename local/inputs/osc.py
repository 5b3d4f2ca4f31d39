"""OSC input: ``/param/<name> <value>`` from a performer's gear (TouchDesigner, Resolume, a
phone OSC app) becomes a parameter update of the owner's session.

The owner is the most recent browser session: one performer drives one relay, and the page
they opened last is the one on stage. Each value is checked against the running chain's
parameter schema, as the cloud publishes it (``GET /api/v1/pipelines``), the same way the
page checks its inputs, so gear that sends garbage is refused here and counted, instead of
reaching the model. Accepted updates take the same path as the page's own ``parameters``
messages (``BrowserSession.on_parameters``): forwarded to the cloud and remembered for a
cloud-hop reconnect.

Datagrams arrive on the event loop (python-osc's asyncio server); they go through a bounded
queue to one owned worker, so a flood costs at most ``QUEUE_SIZE`` pending messages and is
counted, never an unbounded pile of tasks.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from pythonosc.dispatcher import Dispatcher
from pythonosc.osc_server import AsyncIOOSCUDPServer

from scope_relay.protocol.parameters import coerce_parameter, finite_number
from scope_relay.util.tasks import OwnedTasks

logger = logging.getLogger(__name__)

PREFIX = "/param/"
#: ``/tempo/bpm <number>``, ``/tempo/quantize <off|beat|bar|2bars|4bars>``, ``/tempo/tap``
TEMPO_PREFIX = "/tempo/"
TEMPO_ADDRESSES = {"/tempo/bpm": "bpm", "/tempo/quantize": "quantize", "/tempo/tap": "tap"}
#: OSC messages waiting for the worker; beyond this new ones are dropped and counted
QUEUE_SIZE = 256
#: how long the cloud's pipeline list is trusted before it is asked again
SCHEMA_TTL = 10.0


class Owner(Protocol):
    """What OSC needs of a browser session (``BrowserSession`` fits)."""

    pipeline_ids: list[str]

    def on_parameters(self, raw: str, updates: dict[str, Any]) -> None: ...


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
    received: int = 0
    forwarded: int = 0
    #: not /param/<name> with one value, unknown name, or a value the schema refuses
    refused: int = 0
    #: no browser session to drive
    no_session: int = 0
    #: the queue was full
    dropped: int = 0


class OscInput:
    """A UDP OSC server feeding the owner's session; ``start()``, then ``close()``."""

    def __init__(self, owner: Callable[[], Owner | None], fetch_pipelines: FetchPipelines, *,
                 host: str = "127.0.0.1", port: int = 9000, tempo: TempoUpdate | None = None):
        self.host = host
        self.port = port
        self.counts = OscCounts()
        self._owner = owner
        self._fetch = fetch_pipelines
        self._tempo = tempo
        self._queue: asyncio.Queue[tuple[str, tuple[Any, ...]]] = asyncio.Queue(QUEUE_SIZE)
        self._schemas: dict[str, dict[str, Any]] = {}
        self._schemas_at = -math.inf
        self._transport: asyncio.BaseTransport | None = None
        self._tasks = OwnedTasks()

    async def start(self) -> None:
        """Bind (an ``OSError`` if the port is taken) and start the worker."""
        dispatcher = Dispatcher()
        dispatcher.set_default_handler(self._received)
        loop = asyncio.get_running_loop()
        server = AsyncIOOSCUDPServer((self.host, self.port), dispatcher, loop)  # type: ignore[arg-type]
        try:
            self._transport, _ = await server.create_serve_endpoint()
        except OSError as exc:  # say which port: the OS does not, for UDP
            raise OSError(exc.errno, f"OSC port {self.port}: {exc.strerror}") from exc
        self.port = self._transport.get_extra_info("sockname")[1]  # the real one when given 0
        self._tasks.spawn(self._work())

    async def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
        await self._tasks.cancel_all()

    def stats(self) -> dict[str, int]:
        return dict(vars(self.counts))

    def _received(self, address: str, *args: Any) -> None:
        """python-osc's handler, on the event loop: queue it, never block."""
        self.counts.received += 1
        try:
            self._queue.put_nowait((address, args))
        except asyncio.QueueFull:
            self.counts.dropped += 1

    async def _work(self) -> None:
        while True:
            address, args = await self._queue.get()
            try:
                await self._handle(address, args)
            except Exception:  # a bug or a cloud hiccup must not end OSC input
                logger.exception("OSC %s failed", address)

    async def _handle(self, address: str, args: tuple[Any, ...]) -> None:
        if address.startswith(TEMPO_PREFIX) and self._tempo is not None:
            await self._handle_tempo(address, args)
            return
        if not address.startswith(PREFIX) or len(args) != 1:
            self._refuse(address, "expected /param/<name> with one value")
            return
        owner = self._owner()
        if owner is None:
            self.counts.no_session += 1
            return
        name = address[len(PREFIX):]
        spec = (await self._chain_params(owner.pipeline_ids)).get(name)
        if spec is None:
            self._refuse(address, f"the running pipeline has no parameter {name!r}")
            return
        try:
            value = coerce(name, args[0], spec)
        except ValueError as exc:
            self._refuse(address, str(exc))
            return
        updates = {name: value}
        owner.on_parameters(json.dumps(updates), updates)
        self.counts.forwarded += 1

    async def _handle_tempo(self, address: str, args: tuple[Any, ...]) -> None:
        """The relay's tempo, not a session's parameter: no session needed."""
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

    def _refuse(self, address: str, why: str) -> None:
        self.counts.refused += 1
        logger.warning("OSC %s refused: %s", address, why)

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
