"""The relay's output routes and each session's outputs (docs/outputs.md):

- ``POST /whep/{shareToken}`` (``application/sdp``) -> ``201``, ``Location``, the answer:
  a WHEP viewer (``whep.py``); ``DELETE {Location}`` ends it, ``PATCH`` there is ``405``;
- ``GET /ts/{shareToken}``: the session as MPEG-TS over HTTP (``ts.py``);
- ``POST /whip/{sessionId}`` (``application/sdp``) -> ``201``, ``Location``, the answer: a
  WHIP sender becomes the session's camera and/or microphone (``whip.py``); ``DELETE
  {Location}`` hands them back to the page;
- ``POST /api/v1/outputs`` ``{"sessionId", "kind": "ndi", "name"?}`` -> ``{"outputId",
  ...}``: publish the session as an NDI source (``ndi.py``); ``GET`` / ``DELETE
  /api/v1/outputs/{outputId}``: its state / stop it.

The share token is the capability for WHEP and MPEG-TS: whoever may watch the session
may pull it, nothing more. WHIP and NDI drive the session, so they take the owner's
session id (and, beyond this machine, the relay's token like the rest of the API). Every
output of a session is in its figures (``stats_for``) under ``outputs``, by kind, and
ends with the session.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from scope_relay.local.outputs.ndi import NdiOutput
from scope_relay.local.outputs.sdp_http import created, read_offer
from scope_relay.local.outputs.ts import CONTENT_TYPE, TsStream
from scope_relay.local.outputs.whep import WhepViewer
from scope_relay.local.outputs.whip import WhipSession
from scope_relay.local.sessions.browser_session import BrowserSession
from scope_relay.protocol.errors import (
    InvalidMessage,
    NotFound,
    PipelineFailed,
    TooManyViewers,
    UnknownSession,
    UnknownShare,
)
from scope_relay.protocol.messages import load_json_object
from scope_relay.util.tasks import OwnedTasks

logger = logging.getLogger(__name__)

KINDS = ("whep", "ts", "whip", "ndi")
#: what an NDI source is called unless named: ``scope-relay <pipeline>``
NDI_PREFIX = "scope-relay"


class SessionOutputs:
    """One session's outputs and their figures (those of clients gone are kept)."""

    def __init__(self) -> None:
        self.ts: TsStream | None = None
        self.ts_clients_refused = 0
        #: frames received by WHIP senders that have left
        self.whip_received = 0
        self.whep: dict[str, WhepViewer] = {}
        self.whip: WhipSession | None = None
        self.ndi: dict[str, NdiOutput] = {}
        #: counts of WHEP viewers that have left and TS streams that have stopped
        self._gone: dict[str, dict[str, float]] = {kind: {} for kind in KINDS}

    def whep_left(self, viewer: WhepViewer) -> None:
        if self.whep.pop(viewer.session_id, None) is not None:
            self._add("whep", _whep_counts(viewer))

    def ndi_stopped(self, output: NdiOutput) -> None:
        counts = output.stats()
        self._add("ndi", {k: v for k, v in counts.items() if k not in ("clients", "latency_ms")})

    def ts_stopped(self, stream: TsStream) -> None:
        counts = stream.stats()
        counts.pop("clients")
        counts.pop("latency_ms")
        self._add("ts", counts)

    def _add(self, kind: str, counts: Mapping[str, float]) -> None:
        gone = self._gone[kind]
        for key, value in counts.items():
            gone[key] = gone.get(key, 0) + value

    def stats(self) -> dict[str, dict[str, float]]:
        whep: dict[str, float] = {"clients": len(self.whep), "frames_sent": 0, "drops": 0}
        for viewer in self.whep.values():
            for key, value in _whep_counts(viewer).items():
                whep[key] += value
        ts: dict[str, float] = {"clients": 0, "frames_sent": 0, "frames_dropped": 0,
                                "clients_dropped": 0, "bytes_sent": 0, "latency_ms": 0.0}
        if self.ts is not None:
            ts.update(self.ts.stats())
        ts["clients_refused"] = self.ts_clients_refused
        whip: dict[str, float] = {"clients": 0, "frames_received": self.whip_received}
        if self.whip is not None and not self.whip.closed.is_set():
            whip["clients"] = 1
            whip["frames_received"] += sum(h.frames for h in self.whip.held.values())
        ndi: dict[str, float] = {"outputs": len(self.ndi), "clients": 0, "frames_sent": 0,
                                 "frames_dropped": 0, "latency_ms": 0.0}
        for output in self.ndi.values():
            counts = output.stats()
            for key in ("clients", "frames_sent", "frames_dropped"):
                ndi[key] += counts[key]
            ndi["latency_ms"] = max(ndi["latency_ms"], counts["latency_ms"])
        out = {"whep": whep, "ts": ts, "whip": whip, "ndi": ndi}
        for kind, counts in self._gone.items():
            for key, value in counts.items():
                out[kind][key] = out[kind].get(key, 0) + value
        return out


def _whep_counts(viewer: WhepViewer) -> dict[str, float]:
    subs = [s for s in (viewer.video, viewer.audio) if s is not None]
    return {"frames_sent": sum(s.frames for s in subs), "drops": sum(s.skipped for s in subs)}


class Outputs:
    """Every session's outputs; ``sessions`` is the relay's live browser sessions by id."""

    def __init__(self, sessions: Mapping[str, BrowserSession], *, ice_servers: list[dict[str, Any]],
                 loopback_ice: bool, max_clients: int, ndi_name: str | None = None):
        self.sessions = sessions
        self.ice_servers = ice_servers
        self.loopback_ice = loopback_ice
        #: MPEG-TS clients per session (WHEP viewers count against the viewers' cap)
        self.max_clients = max_clients
        self.by_session: dict[str, SessionOutputs] = {}
        self._streams: set[TsStream] = set()  # running, or stopping
        #: NDI outputs by id, with their session's id
        self.ndi: dict[str, tuple[str, NdiOutput]] = {}
        #: ``--ndi [NAME]``: the newest session is published as this source ('' by default name)
        self.auto_ndi = ndi_name
        self._auto_output: str | None = None
        self._tasks = OwnedTasks()

    def _owner(self, token: str) -> BrowserSession:
        owner = next((s for s in self.sessions.values()
                      if s.audience is not None and s.audience.matches(token)), None)
        if owner is None or owner.audience is None or owner.capabilities is None:
            raise UnknownShare("no live session has this share token (it ended, or the "
                               "token is wrong)")
        if owner.pipeline_failed is not None:
            raise PipelineFailed(f"the shared session's pipeline failed: {owner.pipeline_failed}")
        return owner

    def _outputs(self, session: BrowserSession) -> SessionOutputs:
        return self.by_session.setdefault(session.session_id, SessionOutputs())

    # --- WHEP ------------------------------------------------------------------------------
    async def whep_offer(self, request: web.Request) -> web.Response:
        token = request.match_info["share_token"]
        sdp = await read_offer(request)
        owner = self._owner(token)
        assert owner.audience is not None and owner.capabilities is not None
        viewer = WhepViewer(owner.audience.fanout, owner.capabilities, owner.pipeline_ids,
                            ice_servers=self.ice_servers, loopback_ice=self.loopback_ice)
        outputs = self._outputs(owner)
        try:
            owner.audience.admit(viewer)  # the viewers' cap, and their end with the owner
            left_audience = viewer.on_closed
            outputs.whep[viewer.session_id] = viewer

            def closed(viewer_id: str) -> None:
                if left_audience is not None:
                    left_audience(viewer_id)
                outputs.whep_left(viewer)

            viewer.on_closed = closed
            answer = await viewer.handle_offer(sdp)
        except BaseException:
            await viewer.close()
            raise
        return created(answer, f"/whep/{token}/{viewer.session_id}")

    async def whep_delete(self, request: web.Request) -> web.Response:
        owner = self._owner(request.match_info["share_token"])
        viewer = self._outputs(owner).whep.get(request.match_info["resource_id"])
        if viewer is None:
            raise UnknownSession("no such WHEP resource (it ended already?)")
        await viewer.close()
        return web.Response(status=200)

    # --- MPEG-TS ---------------------------------------------------------------------------
    async def ts_get(self, request: web.Request) -> web.StreamResponse:
        owner = self._owner(request.match_info["share_token"])
        if request.method == "HEAD":  # (what a player asks first: the type, no stream)
            return web.Response(headers={"Content-Type": CONTENT_TYPE, "Cache-Control": "no-store"})
        outputs = self._outputs(owner)
        stream = outputs.ts
        if stream is not None and stream.done:  # it failed: a new client gets a new one
            outputs.ts = None
            outputs.ts_stopped(stream)
            self._stop(stream)
            stream = None
        if stream is not None and len(stream.clients) >= self.max_clients:
            outputs.ts_clients_refused += 1
            raise TooManyViewers(f"this session already has {self.max_clients} MPEG-TS clients")
        if stream is None:
            assert owner.audience is not None and owner.capabilities is not None
            caps = owner.capabilities
            stream = outputs.ts = TsStream(
                owner.audience.fanout, video=caps.produces_video and owner.video_track is not None,
                audio=caps.produces_audio and owner.audio_track is not None)
            self._streams.add(stream)
        client = stream.join(request.transport)
        response = web.StreamResponse(headers={"Content-Type": CONTENT_TYPE,
                                               "Cache-Control": "no-store"})
        try:
            await response.prepare(request)
            while (chunk := await client.queue.get()) is not None:
                await response.write(chunk)
                stream.sent(client, len(chunk))
        except (ConnectionError, RuntimeError):  # the client went away (or was dropped)
            pass
        finally:
            stream.leave(client)
            if not stream.clients and outputs.ts is stream:  # the last one: stop encoding
                outputs.ts = None
                outputs.ts_stopped(stream)
                self._stop(stream)
        return response

    # --- WHIP ----------------------------------------------------------------------------
    def _owned(self, request: web.Request) -> BrowserSession:
        session = self.sessions.get(request.match_info["session_id"])
        if session is None:
            raise UnknownSession("no live session has this id")
        return session

    async def whip_offer(self, request: web.Request) -> web.Response:
        sdp = await read_offer(request)
        owner = self._owned(request)
        outputs = self._outputs(owner)
        sender = WhipSession(owner, ice_servers=self.ice_servers, loopback_ice=self.loopback_ice)
        try:
            answer = await sender.handle_offer(sdp)
        except BaseException:
            await sender.close()
            raise
        previous, outputs.whip = outputs.whip, sender
        if previous is not None:  # the newest sender wins (OBS restarted its stream)
            self._tasks.spawn(previous.close())

        def closed(_: str) -> None:
            outputs.whip_received += sum(h.frames for h in sender.held.values())
            if outputs.whip is sender:
                outputs.whip = None

        sender.on_closed = closed
        return created(answer, f"/whip/{owner.session_id}/{sender.session_id}")

    async def whip_delete(self, request: web.Request) -> web.Response:
        outputs = self._outputs(self._owned(request))
        sender = outputs.whip
        if sender is None or sender.session_id != request.match_info["resource_id"]:
            raise UnknownSession("no such WHIP resource (it ended already?)")
        await sender.close()
        return web.Response(status=200)

    # --- NDI -----------------------------------------------------------------------------
    async def start_ndi(self, session: BrowserSession, name: str | None = None) -> tuple[str, NdiOutput]:
        caps = session.capabilities
        if session.audience is None or caps is None:
            raise UnknownSession("the session has not started yet")
        label = "+".join(session.pipeline_ids) or "session"
        output = NdiOutput(session.audience.fanout, name or f"{NDI_PREFIX} {label}",
                           video=caps.produces_video and session.video_track is not None,
                           audio=caps.produces_audio and session.audio_track is not None)
        await output.start()
        if session.session_id not in self.sessions:  # it ended while the source was made
            await output.close()
            raise UnknownSession("the session ended")
        output_id = uuid.uuid4().hex
        self.ndi[output_id] = (session.session_id, output)
        self._outputs(session).ndi[output_id] = output
        return output_id, output

    async def stop_ndi(self, output_id: str) -> NdiOutput:
        entry = self.ndi.pop(output_id, None)
        if entry is None:
            raise NotFound(f"no output {output_id!r}")
        session_id, output = entry
        outputs = self.by_session.get(session_id)
        if outputs is not None and outputs.ndi.pop(output_id, None) is not None:
            outputs.ndi_stopped(output)
        await output.close()
        return output

    async def output_post(self, request: web.Request) -> web.Response:
        body = load_json_object(await request.read(), "body")
        session = self.sessions.get(str(body.get("sessionId")))
        if session is None:
            raise UnknownSession("no live session has this id")
        if body.get("kind") != "ndi":
            raise InvalidMessage("'kind' must be 'ndi' (WHEP, WHIP and MPEG-TS are URLs: "
                                 "docs/outputs.md)")
        name = body.get("name")
        if name is not None and (not isinstance(name, str) or not name.strip() or len(name) > 100):
            raise InvalidMessage("'name' must be a non-empty string of at most 100 characters")
        output_id, output = await self.start_ndi(session, name)
        return web.json_response({"outputId": output_id, **output.describe()})

    async def output_get(self, request: web.Request) -> web.Response:
        entry = self.ndi.get(request.match_info["output_id"])
        if entry is None:
            raise NotFound("no such output")
        return web.json_response({"outputId": request.match_info["output_id"],
                                  **entry[1].describe()})

    async def output_delete(self, request: web.Request) -> web.Response:
        output_id = request.match_info["output_id"]
        output = await self.stop_ndi(output_id)
        return web.json_response({"outputId": output_id, "closed": True, **output.describe()})

    def session_started(self, session: BrowserSession) -> None:
        """``--ndi``: the newest session is the one on stage; it takes over the source."""
        if self.auto_ndi is None:
            return

        async def follow() -> None:
            if self._auto_output is not None and self._auto_output in self.ndi:
                await self.stop_ndi(self._auto_output)
            try:
                self._auto_output, _ = await self.start_ndi(session, self.auto_ndi or None)
            except Exception as exc:  # the session plays on without it
                logger.error("--ndi: could not publish %s: %s", session.name, exc)

        self._tasks.spawn(follow())

    # --- figures and ends ------------------------------------------------------------------
    def stats_for(self, session_id: str) -> dict[str, Any]:
        outputs = self.by_session.get(session_id)
        return {"outputs": (outputs or SessionOutputs()).stats()}

    def session_closed(self, session_id: str) -> None:
        """The session ended (its WHEP viewers end with its audience); its TS stream stops."""
        outputs = self.by_session.pop(session_id, None)
        if outputs is not None and outputs.ts is not None:
            self._stop(outputs.ts)
        if outputs is not None and outputs.whip is not None:
            self._tasks.spawn(outputs.whip.close())
        for output_id in [i for i, (sid, _) in self.ndi.items() if sid == session_id]:
            self._tasks.spawn(self.stop_ndi(output_id))

    def _stop(self, stream: TsStream) -> None:
        async def stop() -> None:
            await stream.close()
            self._streams.discard(stream)
        self._tasks.spawn(stop())

    async def close(self) -> None:
        senders = [o.whip for o in self.by_session.values() if o.whip is not None]
        self.by_session.clear()
        for sender in senders:
            await sender.close()
        for stream in list(self._streams):
            await stream.close()
        for output_id in list(self.ndi):
            await self.stop_ndi(output_id)
        await self._tasks.cancel_all()

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/whep/{share_token}", self.whep_offer),
            web.delete("/whep/{share_token}/{resource_id}", self.whep_delete),
            web.get("/ts/{share_token}", self.ts_get),
            web.post("/whip/{session_id}", self.whip_offer),
            web.delete("/whip/{session_id}/{resource_id}", self.whip_delete),
            web.post("/api/v1/outputs", self.output_post),
            web.get("/api/v1/outputs/{output_id}", self.output_get),
            web.delete("/api/v1/outputs/{output_id}", self.output_delete),
        ]

