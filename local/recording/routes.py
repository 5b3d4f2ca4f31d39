"""The relay's recording API (docs/protocol.md, "Recording"):

- ``POST /api/v1/recordings`` ``{"sessionId"}`` -> ``{"recordingId", ...}``: start
  recording what that session sends to its browser (only whoever holds the full session
  id, the page that created it, can);
- ``GET /api/v1/recordings/{recordingId}``: its state and figures;
- ``DELETE /api/v1/recordings/{recordingId}`` -> ``{"url", "duration", "tracks", ...}``:
  stop and finish the file (again: the same answer);
- ``GET {url}``: the MP4, as an attachment with a file name.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web

from scope_relay.local.recording.catalogue import Recordings
from scope_relay.local.recording.mp4_file import CONTENT_TYPE
from scope_relay.protocol.errors import InvalidMessage, UnknownSession
from scope_relay.protocol.messages import load_json_object


def recording_routes(recordings: Recordings, sessions: Mapping[str, Any]) -> list[web.RouteDef]:
    """``sessions``: the relay's live browser sessions by id."""

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
            return (processor.offset or 0.0) + processor.extra_delay

        recording = recordings.start(session_id, session.video_track, session.audio_track,
                                     label, output_delay)
        return web.json_response(recording.describe())

    async def status(request: web.Request) -> web.Response:
        return web.json_response(recordings.get(request.match_info["recording_id"]).describe())

    async def stop(request: web.Request) -> web.Response:
        recording = await recordings.stop(request.match_info["recording_id"])
        return web.json_response(recording.describe())

    async def download(request: web.Request) -> web.FileResponse:
        recording = recordings.file(request.match_info["recording_id"])
        return web.FileResponse(recording.recorder.path, headers={
            "Content-Type": CONTENT_TYPE,
            "Content-Disposition": f'attachment; filename="{recording.filename}"',
            "Cache-Control": "no-store",
        })

    return [
        web.post("/api/v1/recordings", start),
        web.get("/api/v1/recordings/{recording_id}", status),
        web.delete("/api/v1/recordings/{recording_id}", stop),
        web.get("/api/v1/recordings/{recording_id}/file", download),
    ]
