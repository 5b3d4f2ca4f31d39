"""Which control connection the code running now works for.

A :class:`~.control_channel.ControlChannel` sets :data:`current_connection` for its whole
life, so its requests, the tasks they start (asyncio tasks copy the context, and so does
``asyncio.to_thread``) and the sessions they create, down to each session's pipeline
thread (the runner runs in a copy of the context it was created in), all carry it. Log
lines logged there go only to that connection (:class:`~.log_forwarding.LogHub`), and
``GET /api/v1/stats`` asked there shows only its sessions.
"""

from __future__ import annotations

from contextvars import ContextVar

#: The ``connection_id`` of the control socket being served; ``None`` for app-wide work
#: (startup, plain HTTP requests, anything not started by a control socket).
current_connection: ContextVar[str | None] = ContextVar("scope_cloud_connection", default=None)

#: How much of a session id other tenants and operators' plain HTTP views get to see.
SHORT_ID_CHARS = 8


def short_id(session_id: str) -> str:
    return session_id[:SHORT_ID_CHARS]
