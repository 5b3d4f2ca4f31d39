"""The cloud app: aiohttp server with ``/ws``, ``/api/v1/...``, ``/health`` and ``/metrics``."""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from scope_relay.cloud.api import ApiRouter
from scope_relay.cloud.control.budget import SocketCaps, TokenBucket, key_identity
from scope_relay.cloud.control.channel import ControlChannel
from scope_relay.cloud.control.ice_servers import IceServerConfig
from scope_relay.cloud.control.log_forwarding import OPERATOR_ONLY, LogHub
from scope_relay.cloud.control.tenancy import current_connection, short_id
from scope_relay.cloud.hosting.discovery import discover_pipelines
from scope_relay.cloud.hosting.manager import PipelineManager, resolve_device
from scope_relay.cloud.hosting.registry import PipelineRegistry
from scope_relay.cloud.hosting.reload import PluginReloader, ReloadResult
from scope_relay.cloud.sessions.media_session import MediaSession
from scope_relay.protocol.errors import (
    Busy,
    Draining,
    InvalidMessage,
    ProtocolError,
    TooManyConnections,
    Unauthorized,
)
from scope_relay.protocol.messages import load_json
from scope_relay.rtc.opus import DEFAULT_BITRATE, configure_opus
from scope_relay.rtc.video_encoder import START_SHARE, configure_video
from scope_relay.util.memory import IdleRelease
from scope_relay.util.metrics import metrics_handler, session_gauges
from scope_relay.util.tasks import OwnedTasks

logger = logging.getLogger(__name__)
STATE_KEY: web.AppKey[CloudState] = web.AppKey("state")
#: Only the cloud app's own loggers are forwarded to clients. (Not "scope_relay": in the
#: embedded demo the relay shares the process, and its re-emitted cloud lines would echo.)
CLOUD_LOGGER = "scope_relay.cloud"
#: Probes an orchestrator sends without credentials.
OPEN_PATHS = frozenset({"/health", "/ready"})
#: refused sockets are logged at most this often (they are counted in the stats)
REFUSAL_LOG_INTERVAL = 10.0
#: ``--reload``: plugin files are looked at this often while the app runs (a stat each)
RELOAD_POLL = 1.0


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
    #: every message a control socket sends (pings and WebSocket pings included) takes a
    #: token from a bucket refilled at ``message_rate`` a second and holding ``message_burst``;
    #: without one the socket is not read until there is. 0 or None: no budget.
    message_rate: float | None = 50.0
    message_burst: int = 200
    #: a socket held back for more than this many seconds within ``rate_limit_window`` is
    #: told RATE_LIMITED and closed (1008). None: only ever slowed down.
    rate_limit_close_after: float | None = 5.0
    rate_limit_window: float = 10.0
    #: control sockets one client address / one API key (all clients, without a key) may
    #: hold at once; further upgrades get HTTP 429 TOO_MANY_CONNECTIONS. 0 or None: no cap.
    #: Behind a proxy every client has the proxy's address (docs/security.md).
    max_sockets_per_address: int | None = 32
    max_sockets_per_key: int | None = 64
    #: requests one control socket may have in progress at once; more are refused (BUSY)
    max_requests_in_flight: int = 32
    #: media sessions the app serves at once (each holds a pipeline on the GPU)
    max_sessions: int = 16
    log_interval: float = 0.25
    #: where pipelines run: auto (CUDA when available), cpu, cuda or cuda:N
    device: str | None = "auto"
    preload: list[str] = field(default_factory=list)
    #: pipeline SPECs (``module:Class``, ``file.py[:Class]``) besides the installed ones
    pipelines: list[str] = field(default_factory=list)
    #: load edited plugin sources again at the next chain load / session start
    reload: bool = False
    opus_bitrate: int = DEFAULT_BITRATE
    #: video bitrate ceiling; None: one that fits the picture (rtc/video_encoder.py)
    video_bitrate: int | None = None
    #: the codec this app's answers put first for video, ``vp8`` or ``h264``
    #: (rtc/video_codecs.py); the other one when an offer lacks it
    video_codec: str = "vp8"


class CloudState:
    """Everything the handlers share; owned by the aiohttp app."""

    def __init__(self, config: CloudConfig):
        self.config = config
        device = resolve_device(config.device)  # a device this machine lacks: refused here
        discovery = discover_pipelines(config.pipelines)
        self.registry = PipelineRegistry.from_discovery(discovery)
        reloader = (PluginReloader(discovery.origins, discovery.unloaded) if config.reload
                    else None)
        self.manager = PipelineManager(self.registry, device, reloader)
        logger.info("pipelines on %s: %s%s", device, ", ".join(self.registry.ids()),
                    f" ({len(discovery.failures)} plugins failed to load)"
                    if discovery.failures else "")
        if reloader is not None:
            logger.info("--reload: watching %s", ", ".join(reloader.files) or "no plugin files")
            self.manager.on_reload = self._reload_checked
        self.router = ApiRouter(self.manager, self.stats)
        self.ice = config.ice
        self.sessions: dict[str, MediaSession] = {}
        self.ready = asyncio.Event()
        self.log_hub = LogHub()
        #: the open control sockets (their count is ``connections``)
        self.control_channels: set[ControlChannel] = set()
        self.socket_caps = SocketCaps(config.max_sockets_per_address or None,
                                      config.max_sockets_per_key or None)
        if config.message_rate:  # a bad budget is refused at start, not at the first socket
            TokenBucket(config.message_rate, config.message_burst)
        #: messages held back for lack of a token, and sockets closed for staying over budget
        #: (sockets still open count in their channel until they close)
        self.rate_limited_messages_closed = 0
        self.rate_limited_sockets = 0
        self.sessions_starting = 0
        #: set by :meth:`drain`: live sessions go on, new offers get DRAINING
        self.draining = False
        self._idle = asyncio.Event()  # no session live or starting
        #: gives freed memory back once no session has been live or starting a while
        self.memory = IdleRelease()
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

    async def poll_reloads(self) -> None:
        """``--reload``: look for edited plugin files every :data:`RELOAD_POLL` s while the
        app runs, so a running session hears at once that its edit did not load."""
        reloader = self.manager.reloader
        assert reloader is not None
        while True:
            await asyncio.sleep(RELOAD_POLL)
            if reloader.changed():
                await self.manager.refresh()

    def _reload_checked(self, result: ReloadResult) -> None:
        """Tell every session running a pipeline whose edited source did not load."""
        reloader = self.manager.reloader
        if reloader is None:
            return
        for source, failures in result.failures.items():
            if not failures:
                continue
            for pipeline_id in reloader.pipelines_of(source):
                for session in list(self.sessions.values()):
                    if pipeline_id in session.pipeline_ids:
                        session.reload_failed_for(pipeline_id, failures[-1].error)

    def _note_sessions_changed(self) -> None:
        if self.active_sessions:
            self._idle.clear()
            self.memory.busy()
        else:
            self._idle.set()
            self.memory.idle()

    async def create_session(self, sdp: str, initial_parameters: dict[str, Any],
                             owner: str | None = None) -> MediaSession:
        """A new media session for ``sdp``, belonging to control connection ``owner``."""
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
                               max_buffer=self.config.max_buffer, owner=owner,
                               video_codec=self.config.video_codec)
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
        await asyncio.gather(*(channel.shut_down(Draining(reason))
                               for channel in list(self.control_channels)))
        logger.info("drained: %d sessions cut off", cut)
        return cut

    def count_rate_limited_socket(self) -> None:
        """A channel is closing its socket for staying over its message budget."""
        self.rate_limited_sockets += 1

    @property
    def connections(self) -> int:
        return len(self.control_channels)

    @property
    def rate_limited_messages(self) -> int:
        """Messages that waited for a token, on open and closed sockets alike."""
        return self.rate_limited_messages_closed + sum(
            c.rate_limited_messages for c in list(self.control_channels))

    def owned_session(self, session_id: str, owner: str) -> MediaSession | None:
        """Session ``session_id`` if connection ``owner`` created it, else ``None`` (the same
        answer as for no such session, so other connections' ids cannot be probed)."""
        session = self.sessions.get(session_id)
        return session if session is not None and session.owner == owner else None

    def metrics(self) -> Iterator[Metric]:
        """The figures of :meth:`stats` as Prometheus gauges (and counters: refusals)."""
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
        yield CounterMetricFamily("scope_cloud_rate_limited_messages",
                                  "control messages held back for lack of a token",
                                  value=self.rate_limited_messages)
        yield CounterMetricFamily("scope_cloud_rate_limited_sockets",
                                  "control sockets closed for staying over their message budget",
                                  value=self.rate_limited_sockets)
        refused = CounterMetricFamily("scope_cloud_refused_sockets",
                                      "WebSocket upgrades refused by a socket cap", labels=["cap"])
        for cap in ("address", "key"):
            refused.add_metric([cap], self.socket_caps.refused[cap])
        yield refused
        yield from session_gauges("scope_cloud", ((short_id(s.session_id), s.stats())
                                                  for s in sessions))

    def stats(self) -> dict[str, Any]:
        """``GET /api/v1/stats``. Asked through a control socket: that connection's own
        sessions only (full ids) and its own figures. Asked over plain HTTP (operators,
        with the key when the app has one): every session, ids cut to 8 characters."""
        owner = current_connection.get()
        if owner is not None:
            channel = next((c for c in self.control_channels if c.connection_id == owner), None)
            return {"sessions": [s.stats() for s in self.sessions.values() if s.owner == owner],
                    "connections": self.connections,
                    "log_lines_dropped": channel.log_lines_dropped if channel else 0,
                    "rate_limited_messages": channel.rate_limited_messages if channel else 0}
        return {"sessions": [s.stats() | {"sessionId": short_id(s.session_id)}
                             for s in self.sessions.values()],
                "connections": self.connections, "log_lines_dropped": self.log_hub.dropped,
                "rate_limited_messages": self.rate_limited_messages,
                "rate_limited_sockets": self.rate_limited_sockets,
                "refused_sockets": self.socket_caps.refused_total}


def _presented_key(request: web.Request) -> bytes | None:
    """The token of an ``Authorization: Key <token>`` or ``Bearer <token>`` header (scheme
    in any case), as bytes; ``None`` when there is no such header or it is malformed."""
    try:
        header = request.headers.get("Authorization")
        if not header:
            return None
        scheme, _, token = header.strip().partition(" ")
        token = token.strip()
        if scheme.lower() not in ("key", "bearer") or not token:
            return None
        # the server decoded the header's bytes as UTF-8 with surrogateescape: back to them
        return token.encode("utf-8", "surrogateescape")
    except Exception:  # whatever a client sent, it is a 401, never a 500
        return None


def _authorized(presented: bytes | None, api_key: str | None) -> bool:
    """Constant-time compare of bytes (a str compare raises on non-ASCII text)."""
    if not api_key:
        return True
    if presented is None:
        return False
    try:
        return hmac.compare_digest(presented, api_key.encode("utf-8"))
    except Exception:
        return False


def _error_response(exc: ProtocolError) -> web.Response:
    return web.json_response({"error": exc.message, "code": exc.code, "detail": exc.message},
                             status=exc.status)


def create_app(config: CloudConfig | None = None) -> web.Application:
    """The cloud app's public factory (used by ``scope-relay cloud`` and the embedded demo)."""
    config = config or CloudConfig()
    configure_opus(config.opus_bitrate)
    configure_video(config.video_bitrate, start_share=START_SHARE)
    state = CloudState(config)
    app = web.Application(client_max_size=4 * 1024 * 1024)
    app[STATE_KEY] = state

    @web.middleware
    async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path not in OPEN_PATHS and not _authorized(_presented_key(request),
                                                              config.api_key):
            return _error_response(Unauthorized(
                "missing or wrong API key (Authorization: Key <key>)"))
        return await handler(request)

    app.middlewares.append(auth)
    refusals_logged = {"at": -REFUSAL_LOG_INTERVAL}

    def log_refusal(address: str, cap: str) -> None:
        """For the operator only (another client's address is no client's business), and
        at most every ``REFUSAL_LOG_INTERVAL`` s, however fast sockets are refused."""
        now = time.monotonic()
        if now - refusals_logged["at"] >= REFUSAL_LOG_INTERVAL:
            logger.warning("refused a control socket from %s: at most %s (%d refused in all)",
                           address, cap, state.socket_caps.refused_total, extra=OPERATOR_ONLY)
            refusals_logged["at"] = now

    async def ws_handler(request: web.Request) -> web.StreamResponse:
        # Counted under the address the TCP connection comes from (behind a proxy: the
        # proxy's) and the key presented (past auth: the app's key), or "anonymous".
        address = request.remote or "unknown"
        key = key_identity(_presented_key(request) if config.api_key else None)
        refused_by = state.socket_caps.admit(address, key)
        if refused_by is not None:
            cap = (f"{config.max_sockets_per_address} per address" if refused_by == "address"
                   else f"{config.max_sockets_per_key} per key")
            log_refusal(address, cap)
            return _error_response(TooManyConnections(
                f"too many control sockets: at most {cap}; close one and connect again"))
        try:
            # autoping off: the channel answers WebSocket pings itself, on its message budget
            ws = web.WebSocketResponse(heartbeat=config.heartbeat,
                                       max_msg_size=16 * 1024 * 1024, autoping=False)
            await ws.prepare(request)
            channel = ControlChannel(state, ws, request.transport)
            state.control_channels.add(channel)
            try:
                await channel.run()
            finally:
                state.control_channels.discard(channel)
                state.rate_limited_messages_closed += channel.rate_limited_messages
        finally:
            state.socket_caps.release(address, key)
        return ws

    async def api_handler(request: web.Request) -> web.Response:
        body: Any = None
        if request.can_read_body:
            try:
                body = load_json(await request.read(), "body")
            except InvalidMessage as exc:
                return _error_response(exc)
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

    poller = OwnedTasks()

    async def on_startup(app: web.Application) -> None:
        logging.getLogger(CLOUD_LOGGER).addHandler(state.log_hub)
        if config.preload:
            await state.manager.load(config.preload)
        if state.manager.reloader is not None:
            poller.spawn(state.poll_reloads())
        state.ready.set()

    async def on_cleanup(app: web.Application) -> None:
        await poller.cancel_all()
        logging.getLogger(CLOUD_LOGGER).removeHandler(state.log_hub)
        for session_id in list(state.sessions):
            await state.close_session(session_id)
        state.memory.close()
        await state.manager.close()

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    return app
