"""The relay's recording API (docs/protocol.md, "Recording"):

- ``POST /api/v1/recordings`` ``{"sessionId"}`` -> ``{"recordingId", ...}``: start
  recording what that session sends to its browser (only whoever holds the full session
  id, the page that created it, can); 507 ``INSUFFICIENT_STORAGE`` when the disk or the
  recordings folder has no room;
- ``GET /api/v1/recordings/{recordingId}``: its state and figures (never the session id);
- ``DELETE /api/v1/recordings/{recordingId}`` -> ``{"url", "duration", "tracks", ...}``:
  stop and finish the file (again: the same answer);
- ``GET {url}``: the MP4, as an attachment with a file name, never sniffed as anything
  else nor embedded by another site (``nosniff``, ``Cross-Origin-Resource-Policy``).

A recording that ends by itself (a cap, a write error) is told to its page at once, on the
session's ``parameters`` channel: ``{"type": "recording", "recordingId", "state",
"reason", ...}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web

from scope_relay.local.recording.catalogue import Recordings
from scope_relay.local.recording.mp4_file import CONTENT_TYPE
from scope_relay.protocol.errors import InvalidMessage, UnknownSession
from scope_relay.protocol.messages import load_json_object

DOWNLOAD_HEADERS = {
    "Content-Type": CONTENT_TYPE,
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Cross-Origin-Resource-Policy": "same-origin",
}


def recording_routes(recordings: Recordings, sessions: Mapping[str, Any]) -> list[web.RouteDef]:
    """``sessions``: the relay's live browser sessions by id."""

    def tell_page(session_id: str, message: dict[str, Any]) -> None:
        session = sessions.get(session_id)
        if session is not None:
            session.tell_page(message)

    recordings.on_end = tell_page

    async def start(request: web.Request) -> web.Response:
        body = load_json_object(await request.read(), "body")
        session_id = body.get("sessionId")
        if not isinstance(session_id, str):
            raise InvalidMessage("'sessionId' must be a string")
        session = sessions.get(session_id)
        if session is None:
            raise UnknownSession(f"unknown session {session_id!r}")
        label = "+".join(str(p) for p in getattr(session, "pipeline_ids", None) or []) or "session"
        processor = session.processor

        def output_delay() -> float:  # the relay's release delay now, less its constant part
            return ((processor.offset or 0.0) + processor.extra_delay + processor.loss_room
                    + processor.queue_room)

        recording = await recordings.start(session_id, session.video_track,
                                           session.audio_track, label, output_delay)
        if session_id not in sessions:  # it ended while the disk was looked at
            recordings.session_closed(session_id)
        return web.json_response(recording.describe())

    async def status(request: web.Request) -> web.Response:
        return web.json_response(recordings.get(request.match_info["recording_id"]).describe())

    async def stop(request: web.Request) -> web.Response:
        recording = await recordings.stop(request.match_info["recording_id"])
        return web.json_response(recording.describe())

    async def download(request: web.Request) -> web.FileResponse:
        recording = recordings.file(request.match_info["recording_id"])
        return web.FileResponse(recording.recorder.path, headers={
            **DOWNLOAD_HEADERS,
            "Content-Disposition": f'attachment; filename="{recording.filename}"',
        })

    return [
        web.post("/api/v1/recordings", start),
        web.get("/api/v1/recordings/{recording_id}", status),
        web.delete("/api/v1/recordings/{recording_id}", stop),
        web.get("/api/v1/recordings/{recording_id}/file", download),
    ]
