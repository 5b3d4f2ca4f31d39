"""The relay's aiohttp server for the browser: page, offers, API proxy, stats."""

from __future__ import annotations

import logging
import mimetypes
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client.core import GaugeMetricFamily, Metric

from scope_relay.local.access.same_origin import SameOriginPolicy, same_origin_middleware
from scope_relay.local.access.token import TokenPolicy, guard_with_token, new_token, token_needed
from scope_relay.local.cloud_link.cloud_stats import TIMEOUT as CLOUD_STATS_TIMEOUT
from scope_relay.local.cloud_link.cloud_stats import CloudSendStats
from scope_relay.local.cloud_link.control_socket import CloudConnectionManager
from scope_relay.local.cloud_link.target import CloudTarget
from scope_relay.local.inputs.osc import OscInput
from scope_relay.local.inputs.osc_target import OscTarget, osc_routes
from scope_relay.local.outputs.routes import Outputs
from scope_relay.local.recording.catalogue import Recordings
from scope_relay.local.recording.routes import recording_routes
from scope_relay.local.recording.storage import RecordingLimits
from scope_relay.local.sessions.browser_session import BrowserSession
from scope_relay.local.sessions.viewers import MAX_VIEWERS, ViewerSession
from scope_relay.local.tempo.manager import TempoManager
from scope_relay.local.tempo.routes import tempo_routes
from scope_relay.protocol.errors import (
    Forbidden,
    Internal,
    InvalidMessage,
    MethodNotAllowed,
    NotFound,
    PipelineFailed,
    ProtocolError,
    RequestEntityTooLarge,
    UnknownSession,
    UnknownShare,
)
from scope_relay.protocol.messages import load_json_object
from scope_relay.rtc.opus import DEFAULT_BITRATE, configure_opus
from scope_relay.rtc.video_encoder import configure_video
from scope_relay.util.memory import IdleRelease
from scope_relay.util.metrics import metrics_handler, session_gauges

logger = logging.getLogger(__name__)
RELAY_KEY: web.AppKey[LocalRelay] = web.AppKey("relay")
STATIC = Path(__file__).with_name("static")
# The page is ES modules, which browsers run only when served as JavaScript; Python's
# table can come from the OS (the Windows registry may say text/plain): say it here.
mimetypes.add_type("text/javascript", ".js")
PROXIED = {
    ("GET", "/api/v1/pipelines"), ("GET", "/api/v1/pipelines/schemas"),
    ("POST", "/api/v1/pipeline/load"), ("GET", "/api/v1/pipeline/status"),
}
#: the HTTP errors aiohttp raises (a directory, no route, wrong method, body over the size
#: limit), by status; any other is named by its reason in capitals
HTTP_ERRORS = {e.status: e for e in (Forbidden, NotFound, MethodNotAllowed,
                                     RequestEntityTooLarge)}


@dataclass
class RelayConfig:
    target: CloudTarget
    #: ICE servers for the browser hop (none by default: host candidates suffice locally).
    browser_ice_servers: list[dict[str, Any]] = field(default_factory=list)
    #: Restrict the browser hop to 127.0.0.1 (tests only; a real browser would not connect).
    loopback_ice: bool = False
    playout_delay: float = 0.07
    ready_timeout: float = 300.0
    request_timeout: float = 30.0
    opus_bitrate: int = DEFAULT_BITRATE
    #: VP8 bitrate ceiling for video the relay sends; None: one that fits the picture
    video_bitrate: int | None = None
    #: the address the page is served on: a specific one is also a name the relay answers to
    listen_host: str = "127.0.0.1"
    #: more host names the relay answers to (e.g. its LAN address, to watch from a phone)
    allow_hosts: list[str] = field(default_factory=list)
    #: more origins allowed to drive it (e.g. a page under development on another port)
    allow_origins: list[str] = field(default_factory=list)
    #: (host, port) for OSC input (``/param/<name> <value>``); None: no OSC (local/inputs/osc.py)
    osc_address: tuple[str, int] | None = None
    #: receive-only viewers per session (share links; local/sessions/viewers.py)
    max_viewers: int = MAX_VIEWERS
    #: where recordings go and their caps (local/recording/storage.py)
    recordings: RecordingLimits = field(default_factory=RecordingLimits)
    #: what clients beyond this machine must show (local/access/token.py); made at start
    #: when the relay listens beyond loopback (or ``require_token``) and none is given
    token: str | None = None
    #: this machine's own clients need the token too (e.g. behind a local reverse proxy)
    require_token: bool = False
    #: ``--ndi [NAME]``: publish the newest session as an NDI source ('' : the default name)
    ndi_name: str | None = None

    def __post_init__(self) -> None:
        if self.token is None and token_needed(self.listen_host,
                                               require_locally=self.require_token):
            self.token = new_token()


def _without_id(stats: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in stats.items() if k != "sessionId"}


def _error(status: int, message: str, code: str) -> web.Response:
    return web.json_response({"error": message, "code": code}, status=status)


async def _json_body(request: web.Request) -> dict[str, Any]:
    return load_json_object(await request.read(), "body")


def _share(request: web.Request, session: BrowserSession) -> dict[str, str]:
    """The share link of a session, for its owner only (never in /api/v1/stats)."""
    if session.audience is None:
        return {}
    token = session.audience.token
    base = f"{request.scheme}://{request.host}"
    return {"shareToken": token, "shareUrl": f"{base}/viewer#{token}",
            "whepUrl": f"{base}/whep/{token}", "tsUrl": f"{base}/ts/{token}"}


class LocalRelay:
    def __init__(self, config: RelayConfig):
        self.config = config
        self.connection = CloudConnectionManager(config.target, ready_timeout=config.ready_timeout,
                                                 request_timeout=config.request_timeout)
        #: the cloud's sender figures for our sessions (``cloud_send``), read on demand
        self.cloud_send = CloudSendStats(
            lambda: self.connection.api("GET", "/api/v1/stats", timeout=CLOUD_STATS_TIMEOUT))
        self.sessions: dict[str, BrowserSession] = {}
        self.osc: OscInput | None = None
        #: whom OSC drives: the session pinned with POST /api/v1/osc, else the newest
        self.osc_target = OscTarget(self.sessions)
        self.recordings = Recordings(config.recordings)
        self.outputs = Outputs(self.sessions, ice_servers=config.browser_ice_servers,
                               loopback_ice=config.loopback_ice, max_clients=config.max_viewers,
                               ndi_name=config.ndi_name)
        #: the beat, sent to every session's cloud (local/tempo/)
        self.tempo = TempoManager(lambda: self.sessions.values())
        #: gives freed memory back once no session has been open a while
        self.memory = IdleRelease()

    async def offer(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        if body.get("type", "offer") != "offer":
            raise InvalidMessage("'type' must be 'offer'")
        params = body.get("initialParameters") or {}
        if not isinstance(params, dict):
            raise InvalidMessage("initialParameters must be an object")
        self.memory.busy()  # a start never waits behind the collection (util/memory.py)
        session = BrowserSession(self.connection, ice_servers=self.config.browser_ice_servers,
                                 loopback_ice=self.config.loopback_ice,
                                 cloud_loopback_ice=self.config.target.is_loopback,
                                 playout_delay=self.config.playout_delay,
                                 max_viewers=self.config.max_viewers)
        try:
            answer = await session.handle_offer(body.get("sdp"), params)
        except BaseException:
            await session.close()
            if not self.sessions:
                self.memory.idle()
            raise
        self.sessions[session.session_id] = session
        session.on_closed = self._session_closed
        self.outputs.session_started(session)
        return web.json_response({"sdp": answer, "type": "answer", "sessionId": session.session_id,
                                  **_share(request, session)})

    def _session_closed(self, session_id: str) -> None:
        self.sessions.pop(session_id, None)
        self.recordings.session_closed(session_id)  # its recording is finished, kept
        self.outputs.session_closed(session_id)
        if not self.sessions:
            self.memory.idle()

    def _session(self, request: web.Request) -> BrowserSession:
        session_id = request.match_info["session_id"]
        session = self.sessions.get(session_id)
        if session is None:
            raise UnknownSession(f"unknown session {session_id!r}")
        return session

    async def candidates(self, request: web.Request) -> web.Response:
        session = self._session(request)
        body = await _json_body(request)
        added = await session.add_candidates(body.get("candidates"))
        return web.json_response({"added": added})

    async def delete(self, request: web.Request) -> web.Response:
        await self._session(request).close()
        return web.json_response({"closed": True})

    async def proxy(self, request: web.Request) -> web.Response:
        body = await _json_body(request) if request.can_read_body else None
        status, data = await self.connection.api(request.method, request.path, body,
                                                 timeout=600 if request.method == "POST" else None)
        return web.json_response(data, status=status)

    async def cloud_status(self, request: web.Request) -> web.Response:
        return web.json_response(self.connection.status())

    async def stats(self, request: web.Request) -> web.Response:
        """Every session's figures, each named by an 8-character prefix only: the full id is
        what lets a client end a session, and only its creator has it."""
        sessions = [{"session": s.session_id[:8]} | _without_id(self._session_stats(s))
                    for s in self.sessions.values()]
        out: dict[str, Any] = {"sessions": sessions, "cloud": self.connection.status()}
        if self.osc is not None:
            out["osc"] = self.osc.stats()
        out["recordings"] = self.recordings.stats()
        return web.json_response(out)

    def _session_stats(self, session: BrowserSession) -> dict[str, Any]:
        out = session.stats() | self.outputs.stats_for(session.session_id)
        out["cloud_send"] = self.cloud_send.figures(out.get("cloud_session"))
        return out

    async def session_stats(self, request: web.Request) -> web.Response:
        """One session's figures, for whoever holds its id (the page that created it)."""
        session = self._session(request)
        return web.json_response(self._session_stats(session) | _share(request, session))

    # --- viewers (share links) -------------------------------------------------------------
    async def viewer_offer(self, request: web.Request) -> web.Response:
        """A receive-only viewer joins the session whose share token it holds."""
        body = await _json_body(request)
        if body.get("type", "offer") != "offer":
            raise InvalidMessage("'type' must be 'offer'")
        token = body.get("shareToken")
        if not isinstance(token, str) or not token:
            raise InvalidMessage("'shareToken' must be the token of a share link")
        owner = next((s for s in self.sessions.values()
                      if s.audience is not None and s.audience.matches(token)), None)
        if owner is None or owner.audience is None:
            raise UnknownShare("no live session has this share link (it ended, or the link "
                               "is wrong)")
        if owner.pipeline_failed is not None:
            raise PipelineFailed(f"the shared session's pipeline failed: {owner.pipeline_failed}")
        assert owner.capabilities is not None  # set before the audience exists
        viewer = ViewerSession(owner.audience.fanout, owner.capabilities, owner.pipeline_ids,
                               ice_servers=self.config.browser_ice_servers,
                               loopback_ice=self.config.loopback_ice)
        try:
            owner.audience.admit(viewer)
            answer = await viewer.handle_offer(body.get("sdp"))
        except BaseException:
            await viewer.close()
            raise
        return web.json_response({"sdp": answer, "type": "answer", "viewerId": viewer.session_id})

    def _viewer(self, request: web.Request) -> ViewerSession:
        viewer_id = request.match_info["viewer_id"]
        for session in self.sessions.values():
            if session.audience is not None and viewer_id in session.audience.viewers:
                return session.audience.viewers[viewer_id]
        raise UnknownSession(f"unknown viewer {viewer_id!r}")

    async def viewer_stats(self, request: web.Request) -> web.Response:
        return web.json_response(self._viewer(request).stats())

    async def viewer_delete(self, request: web.Request) -> web.Response:
        await self._viewer(request).close()
        return web.json_response({"closed": True})

    def metrics(self) -> Iterator[Metric]:
        """The figures of ``/api/v1/stats`` as Prometheus gauges."""
        sessions = list(self.sessions.values())
        yield GaugeMetricFamily("scope_relay_sessions", "browser sessions", value=len(sessions))
        ready = 1.0 if self.connection.state == "ready" else 0.0
        yield GaugeMetricFamily("scope_relay_cloud_ready", "control socket ready", value=ready)
        yield from session_gauges("scope_relay", ((s.session_id[:8], self._session_stats(s))
                                                  for s in sessions))
        if self.osc is not None:  # OSC messages received, sent, refused, dropped
            for name, count in self.osc.stats().items():
                yield GaugeMetricFamily(f"scope_relay_osc_{name}", f"OSC messages: {name}",
                                        value=count)
        for name, count in self.recordings.stats().items():  # active, dropped frames, ...
            yield GaugeMetricFamily(f"scope_relay_recordings_{name}", f"recordings: {name}",
                                    value=count)

    async def close(self) -> None:
        for session in list(self.sessions.values()):
            await session.close()
        self.memory.close()
        await self.outputs.close()
        await self.recordings.close()
        await self.cloud_send.close()
        await self.connection.close()


def create_relay_app(config: RelayConfig) -> web.Application:
    configure_opus(config.opus_bitrate)
    configure_video(config.video_bitrate)
    relay = LocalRelay(config)
    app = web.Application(client_max_size=1024 * 1024)
    app[RELAY_KEY] = relay

    @web.middleware
    async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        """Every failure is JSON ``{"error", "code"}`` (docs/protocol.md), never a text page."""
        try:
            return await handler(request)
        except ProtocolError as exc:
            return _error(exc.status, exc.message, exc.code)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            known = HTTP_ERRORS.get(exc.status)
            code = known.code if known else exc.reason.upper().replace(" ", "_")
            response = _error(exc.status, exc.reason, code)
            if "Allow" in exc.headers:  # a 405 still says which methods would do
                response.headers["Allow"] = exc.headers["Allow"]
            return response
        except Exception as exc:  # a bug of ours: answer, log, keep serving
            logger.exception("%s %s failed", request.method, request.path)
            return _error(Internal.status, f"internal error: {type(exc).__name__}: {exc}",
                          Internal.code)

    app.middlewares.append(errors)
    app.middlewares.append(same_origin_middleware(SameOriginPolicy.for_listener(
        config.listen_host, config.allow_hosts, config.allow_origins)))
    if config.token is not None:  # after the host checks: beyond this machine, the token
        guard_with_token(app, TokenPolicy(config.token, local_exempt=not config.require_token))

    async def index(request: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC / "index.html")

    app.router.add_get("/", index)

    async def viewer_page(request: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC / "viewer.html")

    app.router.add_get("/viewer", viewer_page)
    app.router.add_static("/static", STATIC)
    app.router.add_post("/api/v1/webrtc/offer", relay.offer)
    app.router.add_patch("/api/v1/webrtc/offer/{session_id}", relay.candidates)
    app.router.add_delete("/api/v1/webrtc/offer/{session_id}", relay.delete)
    app.router.add_get("/api/v1/webrtc/offer/{session_id}", relay.session_stats)
    app.router.add_post("/api/v1/webrtc/viewer", relay.viewer_offer)
    app.router.add_get("/api/v1/webrtc/viewer/{viewer_id}", relay.viewer_stats)
    app.router.add_delete("/api/v1/webrtc/viewer/{viewer_id}", relay.viewer_delete)
    for method, path in PROXIED:
        app.router.add_route(method, path, relay.proxy)
    app.router.add_get("/api/v1/cloud/status", relay.cloud_status)
    app.router.add_get("/api/v1/stats", relay.stats)
    app.router.add_routes(recording_routes(relay.recordings, relay.sessions))
    app.router.add_routes(osc_routes(relay.osc_target, lambda: relay.osc is not None))
    app.router.add_routes(relay.outputs.routes())
    app.router.add_routes(tempo_routes(relay.tempo))
    app.router.add_get("/metrics", metrics_handler(relay.metrics))

    async def on_startup(app: web.Application) -> None:
        if config.osc_address is not None:  # first: a port in use fails before anything runs
            relay.osc = OscInput(relay.osc_target,
                                 lambda: relay.connection.api("GET", "/api/v1/pipelines"),
                                 host=config.osc_address[0], port=config.osc_address[1],
                                 tempo=relay.tempo.update)
            await relay.osc.start()
        await relay.recordings.open()  # folders of killed relays go
        await relay.tempo.start()
        await relay.connection.start()

    async def on_cleanup(app: web.Application) -> None:
        if relay.osc is not None:
            await relay.osc.close()
        await relay.tempo.close()
        await relay.close()

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    return app
