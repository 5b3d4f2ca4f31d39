"""The cloud app: aiohttp server with ``/ws``, ``/api/v1/...``, ``/health`` and ``/metrics``."""

from __future__ import annotations

import asyncio
import hmac
import logging
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily

from scope_relay.protocol.errors import Busy, InvalidMessage
from scope_relay.protocol.messages import load_json
from scope_relay.rtc.opus import DEFAULT_BITRATE, configure_opus
from scope_relay.util.metrics import session_gauges

from .api import ApiRouter
from .control_channel import ControlChannel
from .ice_servers import IceServerConfig
from .log_forwarding import LogHub
from .media_session import MediaSession
from .pipeline_manager import PipelineManager
from .pipeline_registry import PipelineRegistry

logger = logging.getLogger(__name__)
STATE_KEY: web.AppKey[CloudState] = web.AppKey("state")
#: Only the cloud app's own loggers are forwarded to clients. (Not "scope_relay": in the
#: embedded demo the relay shares the process, and its re-emitted cloud lines would echo.)
CLOUD_LOGGER = "scope_relay.cloud"


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass
class CloudConfig:
    api_key: str | None = None
    ice: IceServerConfig = field(default_factory=IceServerConfig)
    #: Gather only 127.0.0.1 candidates (embedded demo, tests).
    loopback_ice: bool = False
    playout_delay: float = 0.1
    max_buffer: float = 6.0
    request_timeout: float = 60.0
    #: WebSocket-level ping interval; a peer that stops answering is dropped. Clients
    #: that never send ``ping`` messages are never dropped for silence.
    heartbeat: float | None = 20.0
    max_session_seconds: float | None = None
    require_user_id: bool = False
    allowed_user_ids: set[str] | None = None
    max_bad_messages: int = 50
    #: requests one control socket may have in progress at once; more are refused (BUSY)
    max_requests_in_flight: int = 32
    #: media sessions the app serves at once (each holds a pipeline on the GPU)
    max_sessions: int = 16
    log_interval: float = 0.25
    device: str | None = None
    preload: list[str] = field(default_factory=list)
    opus_bitrate: int = DEFAULT_BITRATE


class CloudState:
    """Everything the handlers share; owned by the aiohttp app."""

    def __init__(self, config: CloudConfig):
        self.config = config
        self.registry = PipelineRegistry()
        self.manager = PipelineManager(self.registry, config.device or default_device())
        self.router = ApiRouter(self.manager, self.stats)
        self.ice = config.ice
        self.sessions: dict[str, MediaSession] = {}
        self.ready = asyncio.Event()
        self.log_hub = LogHub()
        self.connections = 0
        self.sessions_starting = 0

    async def create_session(self, sdp: str, initial_parameters: dict[str, Any]) -> MediaSession:
        # Offers being answered count too: answering one awaits a model load.
        if len(self.sessions) + self.sessions_starting >= self.config.max_sessions:
            raise Busy(f"this cloud app already serves {len(self.sessions)} sessions "
                       f"({self.sessions_starting} starting)")
        session = MediaSession(self.manager, ice_servers=self.ice.servers(),
                               loopback_ice=self.config.loopback_ice,
                               playout_delay=self.config.playout_delay,
                               max_buffer=self.config.max_buffer)
        self.sessions_starting += 1
        try:
            await session.accept_offer(sdp, initial_parameters)
        except BaseException:
            await session.close()
            raise
        finally:
            self.sessions_starting -= 1
        self.sessions[session.session_id] = session
        session.on_closed = lambda sid: self.sessions.pop(sid, None)
        return session

    async def close_session(self, session_id: str) -> None:
        session = self.sessions.pop(session_id, None)
        if session is not None:
            await session.close()

    def stats(self) -> dict[str, Any]:
        return {"sessions": [s.stats() for s in self.sessions.values()],
                "connections": self.connections, "log_lines_dropped": self.log_hub.dropped}


class _Metrics:
    def __init__(self, state: CloudState):
        self.state = state

    def collect(self):
        sessions = list(self.state.sessions.values())
        yield GaugeMetricFamily("scope_cloud_sessions", "open media sessions", value=len(sessions))
        yield GaugeMetricFamily("scope_cloud_connections", "open control sockets",
                                value=self.state.connections)
        yield GaugeMetricFamily("scope_cloud_log_lines_dropped", "log lines a slow client missed",
                                value=self.state.log_hub.dropped)
        yield from session_gauges("scope_cloud", ((s.session_id[:8], s.stats()) for s in sessions))


def _authorized(request: web.Request, api_key: str | None) -> bool:
    if not api_key:
        return True
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    return scheme.lower() in ("key", "bearer") and hmac.compare_digest(token.strip(), api_key)


def _json_error(status: int, message: str, code: str) -> web.Response:
    return web.json_response({"error": message, "code": code, "detail": message}, status=status)


def create_app(config: CloudConfig | None = None) -> web.Application:
    """The cloud app's public factory (used by ``scope-relay cloud`` and the embedded demo)."""
    config = config or CloudConfig()
    configure_opus(config.opus_bitrate)
    state = CloudState(config)
    app = web.Application(client_max_size=4 * 1024 * 1024)
    app[STATE_KEY] = state
    metrics_registry = CollectorRegistry()
    metrics_registry.register(_Metrics(state))

    @web.middleware
    async def auth(request: web.Request, handler):
        if request.path not in ("/health",) and not _authorized(request, config.api_key):
            return _json_error(401, "missing or wrong API key (Authorization: Key <key>)",
                               "UNAUTHORIZED")
        return await handler(request)

    app.middlewares.append(auth)

    async def ws_handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=config.heartbeat, max_msg_size=16 * 1024 * 1024,
                                   autoping=True)
        await ws.prepare(request)
        state.connections += 1
        try:
            await ControlChannel(state, ws).run()
        finally:
            state.connections -= 1
        return ws

    async def api_handler(request: web.Request) -> web.Response:
        body: Any = None
        if request.can_read_body:
            try:
                body = load_json(await request.read(), "body")
            except InvalidMessage as exc:
                return _json_error(400, str(exc), InvalidMessage.code)
        result = await state.router.handle(request.method, request.path, body)
        data = result.data
        if result.status >= 400:
            data = data | {"error": result.error, "code": result.code}
        return web.json_response(data, status=result.status)

    async def metrics_handler(request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(metrics_registry),
                            content_type="text/plain", charset="utf-8")

    app.router.add_get("/ws", ws_handler)
    app.router.add_get("/metrics", metrics_handler)
    app.router.add_route("*", "/health", api_handler)
    app.router.add_route("*", "/api/{tail:.*}", api_handler)

    async def on_startup(app: web.Application) -> None:
        logging.getLogger(CLOUD_LOGGER).addHandler(state.log_hub)
        if config.preload:
            await state.manager.load(config.preload)
        state.ready.set()

    async def on_cleanup(app: web.Application) -> None:
        logging.getLogger(CLOUD_LOGGER).removeHandler(state.log_hub)
        for session_id in list(state.sessions):
            await state.close_session(session_id)
        await state.manager.close()

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    return app
