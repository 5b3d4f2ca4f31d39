"""A byte-for-byte bridge in front of the cloud app, for hosts that serve one ASGI app (fal).

fal runs a FastAPI app per runner; our cloud app is an aiohttp server. Rather than
re-implement the control channel, the runner starts ``scope-relay cloud`` as a subprocess
on 127.0.0.1 (:class:`CloudProcess`) and this module forwards to it:

- ``/ws``: every client socket gets an upstream socket of its own, opened *before* the
  client's upgrade is accepted. Text and binary frames are copied unchanged both ways, one
  at a time (each send is awaited, so nothing piles up between the two sockets); a close
  is passed on with its code and reason; the client's ``Authorization`` header (and any
  subprotocols it offers) go upstream, and an upstream refusal of the upgrade (401 without
  the right key, for instance) is answered to the client with the same status and body.
- ``/health``, ``/ready``, ``/metrics``, ``/api/...``: proxied over HTTP, except the operator
  routes (``/metrics``, the all-sessions ``/api/v1/stats``) while the cloud app has no API
  key: on fal it runs without one behind fal's gateway, and every caller the gateway admits
  would read every session's figures. With a key the app itself checks it.

Every client reaches the cloud app from the bridge's address, so the app runs with its
per-address socket cap off (``--max-sockets-per-address 0``; otherwise the first 32 sockets
of one client would lock everyone out); the per-key cap and the message budgets stay.

Codes that cannot travel in a close frame are mapped: "no status" (1005) becomes 1000, and
a connection lost without a close frame (1006) closes the other side with 1011 (upstream
lost) or 1001 (client lost).

:func:`create_bridge` builds the app that ``python deploy/fal/app.py --local`` serves with
uvicorn; ``deploy/fal/app.py`` reuses :func:`bridge_websocket` and :func:`add_http_routes`
inside its ``fal.App``. Needs ``pip install 'scope-relay[deploy]'`` (fastapi, uvicorn,
websockets); fal itself is needed only for the real deployment.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import TYPE_CHECKING

import httpx
from fastapi import FastAPI, WebSocket
from starlette.requests import Request
from starlette.responses import Response

if TYPE_CHECKING:  # websockets is imported where it is used: `fal deploy` loads this module
    from websockets.asyncio.client import ClientConnection  # on a machine that may lack it

__all__ = ["CloudProcess", "add_http_routes", "bridge_websocket", "create_bridge"]

#: the line ``scope-relay cloud`` prints once it serves
CLOUD_URL_LINE = re.compile(r"cloud app: (ws://\S+)")
#: the cloud app's own transport limit for one WebSocket frame
MAX_FRAME_BYTES = 16 * 1024 * 1024
#: the cloud app's own limit for an HTTP request body
MAX_BODY_BYTES = 4 * 1024 * 1024
#: client headers the WebSocket upgrade carries upstream
WS_HEADERS = ("authorization",)
#: client headers a proxied HTTP request carries upstream
HTTP_HEADERS = ("authorization", "content-type", "accept")
#: routes proxied over HTTP as they are (``/api/...`` too)
HTTP_PATHS = ("/health", "/ready", "/metrics")
#: routes that show every session: proxied only when the cloud app checks a key
OPERATOR_PATHS = frozenset({"/metrics", "/api/v1/stats"})
CLOSE_NORMAL, CLOSE_GOING_AWAY, CLOSE_INTERNAL = 1000, 1001, 1011
NO_STATUS, ABNORMAL = 1005, 1006


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def _unavailable(message: str) -> Response:
    body = json.dumps({"error": message, "code": "UNAVAILABLE", "detail": message})
    return Response(body, 503, media_type="application/json")


# --- the cloud app as a subprocess ---------------------------------------------------------
class CloudProcess:
    """``scope-relay cloud`` on 127.0.0.1 with a free port, started and stopped by the
    bridge. Blocking methods (run them off the event loop): :meth:`start` waits for the
    app's ``cloud app: ws://...`` line and then for its ``/health``; :meth:`stop` sends
    SIGTERM (the app drains: no new sessions, live ones finish) and kills it after
    ``stop_timeout`` s. The app's stdout is echoed to ours; its stderr (its log) is ours."""

    def __init__(self, extra_args: Sequence[str] = (), *, api_key: str | None = None,
                 loopback_ice: bool = False, start_timeout: float = 900.0,
                 stop_timeout: float = 30.0, python: str = sys.executable):
        self.extra_args = list(extra_args)
        self.api_key = api_key
        self.loopback_ice = loopback_ice
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.python = python
        self.process: subprocess.Popen[str] | None = None
        self.ws_url: str | None = None
        self._reader: threading.Thread | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> CloudProcess:
        """``SCOPE_CLOUD_ARGS`` (more ``scope-relay cloud`` flags, shell syntax),
        ``SCOPE_CLOUD_API_KEY``, ``SCOPE_CLOUD_LOOPBACK_ICE=1``, ``SCOPE_CLOUD_START_TIMEOUT``
        and ``SCOPE_CLOUD_STOP_TIMEOUT`` (seconds)."""
        env = os.environ if env is None else env
        return cls(shlex.split(env.get("SCOPE_CLOUD_ARGS", "")),
                   api_key=env.get("SCOPE_CLOUD_API_KEY") or None,
                   loopback_ice=_truthy(env.get("SCOPE_CLOUD_LOOPBACK_ICE")),
                   start_timeout=float(env.get("SCOPE_CLOUD_START_TIMEOUT") or 900),
                   stop_timeout=float(env.get("SCOPE_CLOUD_STOP_TIMEOUT") or 30))

    @property
    def http_url(self) -> str:
        if self.ws_url is None:
            raise RuntimeError("the cloud app is not running")
        return self.ws_url.replace("ws://", "http://", 1).removesuffix("/ws")

    def command(self) -> list[str]:
        # ours come last, so extra arguments cannot move the app off loopback, nor give it a
        # per-address cap that every client behind the bridge (one address) would share
        return [self.python, "-m", "scope_relay.cli", "cloud", *self.extra_args,
                *(["--loopback-ice"] if self.loopback_ice else []),
                "--host", "127.0.0.1", "--port", "0", "--max-sockets-per-address", "0"]

    def start(self) -> str:
        """Launch the app and return its HTTP URL once ``/health`` answers."""
        if self.process is not None:
            raise RuntimeError("already started")
        env = dict(os.environ)
        if self.api_key:
            env["SCOPE_CLOUD_API_KEY"] = self.api_key
        deadline = time.monotonic() + self.start_timeout
        self.process = subprocess.Popen(self.command(), stdout=subprocess.PIPE, text=True, env=env)
        announced = threading.Event()
        self._reader = threading.Thread(target=self._echo_stdout, args=(announced,),
                                        name="cloud-app-stdout", daemon=True)
        self._reader.start()
        try:
            if not announced.wait(self.start_timeout) or self.ws_url is None:
                raise RuntimeError(f"the cloud app did not start (exit status {self.process.poll()})")
            self._wait_healthy(deadline)
        except BaseException:
            self.stop()
            raise
        return self.http_url

    def _echo_stdout(self, announced: threading.Event) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            if self.ws_url is None and (match := CLOUD_URL_LINE.search(line)):
                self.ws_url = match.group(1)
                announced.set()
            sys.stdout.write(line)
            sys.stdout.flush()
        announced.set()  # ended before announcing: start() sees no URL

    def _wait_healthy(self, deadline: float) -> None:
        with httpx.Client(timeout=5.0) as http:
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if http.get(self.http_url + "/health").status_code == 200:
                        return
                if self.process is None or self.process.poll() is not None:
                    raise RuntimeError("the cloud app exited before it was healthy")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the cloud app was not healthy in {self.start_timeout:g} s")
                time.sleep(0.1)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def terminate(self) -> None:
        """SIGTERM without waiting: the app drains, then exits."""
        if self.running:
            assert self.process is not None
            self.process.send_signal(signal.SIGTERM)

    def wait(self, timeout: float | None = None) -> int | None:
        return None if self.process is None else self.process.wait(timeout)

    def stop(self) -> int | None:
        """SIGTERM, wait up to ``stop_timeout`` s, then SIGKILL; the exit status."""
        if self.process is None:
            return None
        self.terminate()
        try:
            status = self.process.wait(self.stop_timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            status = self.process.wait()
        if self._reader is not None:
            self._reader.join(5.0)
        return status


# --- /ws ---------------------------------------------------------------------------------
def _sendable(code: int | None, reason: str, lost_code: int, lost_reason: str) -> tuple[int, str]:
    """A received close as one that can be sent on (see the module docstring)."""
    if code is None or code == NO_STATUS:
        return CLOSE_NORMAL, ""
    if code == ABNORMAL or code == 1015:
        return lost_code, lost_reason
    return code, reason


async def _deny(client: WebSocket, status: int, body: bytes, content_type: str | None) -> None:
    """Refuse the client's upgrade with an HTTP response (where the server supports the
    ASGI denial extension; otherwise uvicorn's plain 403)."""
    if "websocket.http.response" in client.scope.get("extensions", {}):
        await client.send_denial_response(Response(body, status, media_type=content_type))
    else:
        await client.close(1008)


async def _client_to_upstream(client: WebSocket, upstream: ClientConnection) -> tuple[int, str]:
    while True:
        message = await client.receive()
        if message["type"] == "websocket.disconnect":
            return message.get("code", NO_STATUS), message.get("reason") or ""
        if message.get("text") is not None:
            await upstream.send(message["text"])
        elif message.get("bytes") is not None:
            await upstream.send(message["bytes"])


async def _upstream_to_client(client: WebSocket, upstream: ClientConnection) -> None:
    from websockets.exceptions import ConnectionClosed

    with contextlib.suppress(ConnectionClosed):
        async for data in upstream:
            if isinstance(data, str):
                await client.send_text(data)
            else:
                await client.send_bytes(data)


async def bridge_websocket(client: WebSocket, upstream_ws_url: str) -> None:
    """Serve one client socket by forwarding it to ``upstream_ws_url`` until either side
    closes (see the module docstring)."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import InvalidHandshake, InvalidStatus
    from websockets.typing import Subprotocol

    headers = [(name, value) for name, value in client.headers.items() if name in WS_HEADERS]
    offered = [Subprotocol(p) for p in client.scope.get("subprotocols") or []]
    try:
        upstream = await connect(upstream_ws_url, additional_headers=headers,
                                 subprotocols=offered or None, compression=None,
                                 max_size=MAX_FRAME_BYTES, ping_interval=None, open_timeout=30)
    except InvalidStatus as exc:
        response = exc.response
        await _deny(client, response.status_code, bytes(response.body or b""),
                    response.headers.get("Content-Type"))
        return
    except (InvalidHandshake, OSError, TimeoutError) as exc:
        unavailable = _unavailable(f"cloud app not reachable: {exc}")
        await _deny(client, 503, bytes(unavailable.body), "application/json")
        return
    async with upstream:
        await client.accept(subprotocol=upstream.subprotocol)
        up = asyncio.ensure_future(_client_to_upstream(client, upstream))
        down = asyncio.ensure_future(_upstream_to_client(client, upstream))
        try:
            await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (up, down):
                task.cancel()
            outcome = await asyncio.gather(up, down, return_exceptions=True)
        if isinstance(outcome[0], tuple):  # the client closed first: so does upstream
            code, reason = _sendable(*outcome[0], CLOSE_GOING_AWAY, "client connection lost")
            await upstream.close(code, reason)
        else:  # upstream closed (or a send to the client failed): close the client alike
            if upstream.close_code is None:
                await upstream.close(CLOSE_GOING_AWAY, "client connection lost")
            code, reason = _sendable(upstream.close_code, upstream.close_reason or "",
                                     CLOSE_INTERNAL, "cloud app connection lost")
            with contextlib.suppress(Exception):  # the client may be gone already
                await client.close(code, reason)


# --- HTTP --------------------------------------------------------------------------------
def _normalized(path: str) -> str:
    """``path`` with empty segments dropped (``//api/v1/stats/`` is ``/api/v1/stats``)."""
    return "/" + "/".join(part for part in path.split("/") if part)


class HttpProxy:
    """Forwards a request to the cloud app, with a bounded body, as it is; the operator routes
    only while ``upstream_checks_key()`` (the app has an API key), else ``403 FORBIDDEN``."""

    def __init__(self, upstream: Callable[[], str],
                 upstream_checks_key: Callable[[], bool] = lambda: False):
        self.upstream = upstream
        self.upstream_checks_key = upstream_checks_key
        self._http: httpx.AsyncClient | None = None

    async def forward(self, request: Request, path: str) -> Response:
        if _normalized(path) in OPERATOR_PATHS and not self.upstream_checks_key():
            message = (f"{_normalized(path)} shows every session: not served through this bridge"
                       " while the cloud app has no API key")
            return Response(json.dumps({"error": message, "code": "FORBIDDEN"}), 403,
                            media_type="application/json")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY_BYTES:
                message = f"request body over {MAX_BODY_BYTES} bytes"
                return Response(json.dumps({"error": message, "code": "TOO_LARGE"}), 413,
                                media_type="application/json")
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=httpx.Timeout(660.0, connect=10.0))
        headers = {k: v for k, v in request.headers.items() if k in HTTP_HEADERS}
        try:
            reply = await self._http.request(request.method, self.upstream() + path,
                                             params=request.url.query or None,
                                             content=bytes(body) or None, headers=headers)
        except (httpx.HTTPError, RuntimeError) as exc:
            return _unavailable(f"cloud app not reachable: {exc}")
        return Response(reply.content, reply.status_code,
                        media_type=reply.headers.get("content-type"))

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None


def add_http_routes(app: FastAPI, proxy: HttpProxy, paths: Sequence[str] = HTTP_PATHS) -> None:
    """Proxy ``paths`` (GET) and ``/api/...`` (any method) to the cloud app."""
    for path in paths:
        async def fixed(request: Request, path: str = path) -> Response:
            return await proxy.forward(request, path)
        app.add_route(path, fixed, methods=["GET"], include_in_schema=False)

    async def api(request: Request) -> Response:
        return await proxy.forward(request, "/api/" + request.path_params["rest"])
    app.add_route("/api/{rest:path}", api, methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
                  include_in_schema=False)


# --- the app -----------------------------------------------------------------------------
def create_bridge(upstream: str | CloudProcess) -> FastAPI:
    """The bridge as a FastAPI app. ``upstream`` is the HTTP URL of a cloud app already
    running, or a :class:`CloudProcess` the app starts on startup and stops on shutdown."""
    cloud = upstream if isinstance(upstream, CloudProcess) else None
    fixed_url = "" if isinstance(upstream, CloudProcess) else upstream.rstrip("/")

    def upstream_url() -> str:
        return cloud.http_url if cloud is not None else fixed_url

    proxy = HttpProxy(upstream_url, lambda: cloud is not None and bool(cloud.api_key))

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if cloud is not None:
            await asyncio.to_thread(cloud.start)
        try:
            yield
        finally:
            await proxy.aclose()
            if cloud is not None:
                await asyncio.to_thread(cloud.stop)

    app = FastAPI(lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        await bridge_websocket(websocket, upstream_url().replace("http://", "ws://", 1) + "/ws")

    add_http_routes(app, proxy)
    app.state.cloud = cloud
    return app

