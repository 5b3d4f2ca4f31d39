"""The relay's tempo API (docs/tempo.md):

- ``GET /api/v1/tempo`` -> ``{"source", "bpm", "beat", "phase", "bar", "beat_in_bar",
  "playing", "peers", "quantize", "beats_per_bar", "page_latency", ...}``;
- ``PUT /api/v1/tempo`` with any of ``{"source": "link"|"midi"|"page"|"manual"|"off",
  "bpm", "quantize": "off"|"beat"|"bar"|"2bars"|"4bars", "beats_per_bar", "page_latency",
  "tap": true, "beat", "midi_port"}`` -> the same as GET; 400 ``INVALID_MESSAGE`` saying what is wrong
  (nothing changes then).
"""

from __future__ import annotations

from aiohttp import web

from scope_relay.local.tempo.manager import TempoManager
from scope_relay.protocol.errors import InvalidMessage
from scope_relay.protocol.messages import load_json_object


def tempo_routes(tempo: TempoManager) -> list[web.RouteDef]:
    async def get(request: web.Request) -> web.Response:
        return web.json_response(tempo.snapshot())

    async def put(request: web.Request) -> web.Response:
        body = load_json_object(await request.read(), "body")
        try:
            return web.json_response(await tempo.update(body))
        except ValueError as exc:
            raise InvalidMessage(str(exc)) from exc

    return [web.get("/api/v1/tempo", get), web.put("/api/v1/tempo", put)]
