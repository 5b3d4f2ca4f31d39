"""The cloud app: aiohttp server with ``/ws``, ``/api/v1/...``, ``/health`` and ``/metrics``."""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from prometheus_client.core import GaugeMetricFamily, Metric

from scope_relay.protocol.errors import Busy, Draining, InvalidMessage
from scope_relay.protocol.messages import load_json
from scope_relay.rtc.opus import DEFAULT_BITRATE, configure_opus
from scope_relay.util.metrics import metrics_handler, session_gauges

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
#: Probes an orchestrator sends without credentials.
OPEN_PATHS = frozenset({"/health", "/ready"})


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
        #: the open control sockets (their count is ``connections``)
        self.control_channels: set[ControlChannel] = set()
        self.sessions_starting = 0
        #: set by :meth:`drain`: live sessions go on, new offers get DRAINING
        self.draining = False
        self._idle = asyncio.Event()  # no session live or starting
        self._idle.set()

    @property
    def active_sessions(self) -> int:
        """Sessions streaming or being set up (what an autoscaler should count)."""
        return len(self.sessions) + self.sessions_starting

    def readiness(self) -> str:
        """``ready`` when a new session would be taken, else why not: ``starting``
        (pipelines still preloading), ``draining`` or ``full``."""
        if not self.ready.is_set():
            return "starting"
        if self.draining:
            return "draining"
        if self.active_sessions >= self.config.max_sessions:
            return "full"
        return "ready"

    def _note_sessions_changed(self) -> None:
        if self.active_sessions:
            self._idle.clear()
        else:
            self._idle.set()

    async def create_session(self, sdp: str, initial_parameters: dict[str, Any]) -> MediaSession:
        if self.draining:
            raise Draining("this cloud app is shutting down and takes no new sessions; "
                           "connect again to reach another instance")
        # Offers being answered count too: answering one awaits a model load.
        if self.active_sessions >= self.config.max_sessions:
            raise Busy(f"this cloud app already serves {len(self.sessions)} sessions "
                       f"({self.sessions_starting} starting)")
        session = MediaSession(self.manager, ice_servers=self.ice.servers(),
                               loopback_ice=self.config.loopback_ice,
                               playout_delay=self.config.playout_delay,
                               max_buffer=self.config.max_buffer)
        self.sessions_starting += 1
        self._note_sessions_changed()
        try:
            await session.accept_offer(sdp, initial_parameters)
        except BaseException:
            await session.close()
            raise
        else:
            self.sessions[session.session_id] = session
            session.on_closed = self._forget_session
        finally:
            self.sessions_starting -= 1
            self._note_sessions_changed()
        return session

    def _forget_session(self, session_id: str) -> None:
        self.sessions.pop(session_id, None)
        self._note_sessions_changed()

    async def close_session(self, session_id: str) -> None:
        session = self.sessions.pop(session_id, None)
        self._note_sessions_changed()
        if session is not None:
            await session.close()

    async def drain(self, timeout: float) -> int:
        """Take no new sessions, let the live ones stream until they end or ``timeout``
        passes, then tell every client why and close its socket. Returns how many sessions
        were still live at the end (cut off)."""
        self.draining = True
        logger.info("draining: %d live sessions, waiting up to %g s", self.active_sessions,
                    timeout)
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            pass
        cut = self.active_sessions
        reason = (f"the cloud app shut down after draining for {timeout:g} s" if cut
                  else "the cloud app shut down")
        await asyncio.gather(*(channel.shut_down(reason, "DRAINING")
                               for channel in list(self.control_channels)))
        logger.info("drained: %d sessions cut off", cut)
        return cut

    @property
    def connections(self) -> int:
        return len(self.control_channels)

    def metrics(self) -> Iterator[Metric]:
        """The figures of :meth:`stats` as Prometheus gauges."""
        sessions = list(self.sessions.values())
        yield GaugeMetricFamily("scope_cloud_sessions", "open media sessions", value=len(sessions))
        yield GaugeMetricFamily("scope_cloud_active_sessions",
                                "media sessions streaming or being set up (scale on this)",
                                value=self.active_sessions)
        yield GaugeMetricFamily("scope_cloud_session_capacity",
                                "media sessions this instance serves at once (--max-sessions)",
                                value=self.config.max_sessions)
        yield GaugeMetricFamily("scope_cloud_draining", "1 while shutting down",
                                value=1.0 if self.draining else 0.0)
        yield GaugeMetricFamily("scope_cloud_connections", "open control sockets",
                                value=self.connections)
        yield GaugeMetricFamily("scope_cloud_log_lines_dropped", "log lines a slow client missed",
                                value=self.log_hub.dropped)
        yield from session_gauges("scope_cloud", ((s.session_id[:8], s.stats()) for s in sessions))

    def stats(self) -> dict[str, Any]:
        return {"sessions": [s.stats() for s in self.sessions.values()],
                "connections": self.connections, "log_lines_dropped": self.log_hub.dropped}


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

    @web.middleware
    async def auth(request: web.Request, handler):
        if request.path not in OPEN_PATHS and not _authorized(request, config.api_key):
            return _json_error(401, "missing or wrong API key (Authorization: Key <key>)",
                               "UNAUTHORIZED")
        return await handler(request)

    app.middlewares.append(auth)

    async def ws_handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=config.heartbeat, max_msg_size=16 * 1024 * 1024,
                                   autoping=True)
        await ws.prepare(request)
        channel = ControlChannel(state, ws)
        state.control_channels.add(channel)
        try:
            await channel.run()
        finally:
            state.control_channels.discard(channel)
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

    async def ready_handler(request: web.Request) -> web.Response:
        readiness = state.readiness()
        return web.json_response({"status": readiness, "sessions": state.active_sessions,
                                  "capacity": config.max_sessions},
                                 status=200 if readiness == "ready" else 503)

    app.router.add_get("/ready", ready_handler)
    app.router.add_get("/ws", ws_handler)
    app.router.add_get("/metrics", metrics_handler(state.metrics))
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
