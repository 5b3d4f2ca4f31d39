"""Serve an aiohttp app on one address for as long as a ``with`` block runs."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger


class DebugAccessLogger(AbstractAccessLogger):
    """aiohttp's access log, one line per request, at DEBUG instead of INFO: an open page
    polls the relay several times a second, and at INFO those lines bury the ones that
    matter. ``--log-level debug`` shows them again."""

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.DEBUG)

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.debug("%s %s %s %s %.1f ms", request.remote, request.method,
                          request.path_qs, response.status, time * 1000)


@dataclass(frozen=True)
class Served:
    """A running app and the URL it answers on (the bound port, when 0 was asked for)."""

    url: str
    app: web.Application

    @property
    def ws_url(self) -> str:
        """The app's ``/ws`` endpoint (the cloud app's control channel)."""
        return self.url.replace("http://", "ws://", 1) + "/ws"


@contextlib.asynccontextmanager
async def serve(app: web.Application, host: str = "127.0.0.1", port: int = 0,
                shutdown_timeout: float = 2.0) -> AsyncIterator[Served]:
    """Run ``app`` on ``host:port`` (0: a free port) and clean it up on exit; requests are
    logged at DEBUG on ``aiohttp.access`` (:class:`DebugAccessLogger`)."""
    runner = web.AppRunner(app, shutdown_timeout=shutdown_timeout,
                           access_log_class=DebugAccessLogger)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound = runner.addresses[0][1]
        shown = f"[{host}]" if ":" in host else host
        yield Served(f"http://{shown}:{bound}", app)
    finally:
        await runner.cleanup()
