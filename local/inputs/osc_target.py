"""Which browser session OSC drives, and the API that pins it.

By default OSC drives the newest session: the page opened last is the one on stage. With
OSC open to the LAN (``--osc-host 0.0.0.0``) that lets anyone who can start a session take
over the performer's gear, so whoever holds a session's full id (only its creator, the
page, has it) can pin OSC to that session:
``POST /api/v1/osc {"sessionId"}``. While that session lives, nobody else can move the pin
(``409 OSC_PINNED``); it is released by its holder (``"pinned": false``) or when the
session ends, and OSC goes back to the newest session.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from aiohttp import web

from scope_relay.protocol.errors import InvalidMessage, OscOff, OscPinned, UnknownSession
from scope_relay.protocol.messages import load_json_object


class Owner(Protocol):
    """What OSC needs of a browser session (``BrowserSession`` fits)."""

    session_id: str
    pipeline_ids: list[str]

    def on_parameters(self, raw: str, updates: dict[str, Any], source: str = "page") -> None: ...


class OscTarget:
    """Call it for the session OSC drives now (``None``: there is none)."""

    def __init__(self, sessions: Mapping[str, Owner]):
        self._sessions = sessions  # the relay's live sessions, oldest first
        self._pinned: str | None = None

    def __call__(self) -> Owner | None:
        pinned = self._live_pin()
        if pinned is not None:
            return self._sessions[pinned]
        live = list(self._sessions.values())  # a handful; a Mapping has no reversed()
        return live[-1] if live else None

    @property
    def pinned(self) -> bool:
        return self._live_pin() is not None

    def _live_pin(self) -> str | None:
        if self._pinned is not None and self._pinned not in self._sessions:
            self._pinned = None  # its session ended: back to the newest
        return self._pinned

    def pin(self, session_id: str, pinned: bool = True) -> None:
        """Pin OSC to ``session_id`` (or release it, ``pinned=False``); only the pinned
        session's holder may move or release a live pin."""
        if session_id not in self._sessions:
            raise UnknownSession("unknown session")
        current = self._live_pin()
        if current is not None and current != session_id:
            raise OscPinned("OSC is pinned to another session; its page can release it")
        self._pinned = session_id if pinned else None

    def describe(self) -> dict[str, Any]:
        """What ``/api/v1/osc`` answers: whom OSC drives, by the 8-character prefix."""
        owner = self()
        return {"target": "pinned" if self.pinned else "newest",
                "session": owner.session_id[:8] if owner is not None else None}


def osc_routes(target: OscTarget, enabled: Callable[[], bool]) -> list[web.RouteDef]:
    """``GET /api/v1/osc`` (whom OSC drives) and ``POST /api/v1/osc`` (pin, release)."""

    def _check_enabled() -> None:
        if not enabled():
            raise OscOff("OSC input is off (start the relay with --osc-port)")

    async def get(request: web.Request) -> web.Response:
        _check_enabled()
        return web.json_response(target.describe())

    async def post(request: web.Request) -> web.Response:
        _check_enabled()
        body = load_json_object(await request.read(), "body")
        session_id, pinned = body.get("sessionId"), body.get("pinned", True)
        if not isinstance(session_id, str) or not session_id:
            raise InvalidMessage("'sessionId' must be the id of your session")
        if not isinstance(pinned, bool):
            raise InvalidMessage("'pinned' must be true or false")
        target.pin(session_id, pinned)
        return web.json_response(target.describe())

    return [web.get("/api/v1/osc", get), web.post("/api/v1/osc", post)]
