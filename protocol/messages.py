"""Every control-channel message, both directions: typed requests with their parser and
builder, reply builders, and the parsers a client reads replies with (docs/protocol.md).

Field names are exactly those of Scope's cloud mode (camelCase where it uses it), so
either side can talk to the other's counterpart.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import (
    InvalidMessage,
    PipelineFailed,
    ProtocolError,
    UnknownMessageType,
    UnnamedApiError,
    UnnamedCloudError,
    UnnamedError,
)

#: Scope's client refuses larger messages; nothing we send may exceed it.
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
#: Scope's client re-emits at most this many log lines per ``logs`` message.
MAX_LOG_LINES = 50
API_METHODS = frozenset({"GET", "POST", "PATCH", "PUT", "DELETE"})


def _message(msg_type: str, request_id: str | None, **fields: Any) -> dict[str, Any]:
    """A message dict; ``request_id`` only when there is one (Scope's client omits it too)."""
    out: dict[str, Any] = {"type": msg_type}
    if request_id is not None:
        out["request_id"] = request_id
    out.update(fields)
    return out


# --- requests (client -> cloud) --------------------------------------------------------
# Each is parsed by the cloud (:func:`parse_request`) and built by a client
# (``to_message``); ``request_id`` is filled in by whoever sends it.

@dataclass(frozen=True)
class GetIceServers:
    request_id: str | None = None
    type: str = "get_ice_servers"

    def to_message(self) -> dict[str, Any]:
        return _message(self.type, self.request_id)


@dataclass(frozen=True)
class Offer:
    request_id: str | None
    sdp: str
    sdp_type: str = "offer"
    initial_parameters: dict[str, Any] = field(default_factory=dict)
    user_id: str | None = None
    type: str = "offer"

    def to_message(self) -> dict[str, Any]:
        out = _message(self.type, self.request_id, sdp=self.sdp, sdp_type=self.sdp_type)
        if self.initial_parameters:  # as Scope's client: only when there are any
            out["initialParameters"] = dict(self.initial_parameters)
        if self.user_id is not None:
            out["user_id"] = self.user_id
        return out


@dataclass(frozen=True)
class IceCandidate:
    request_id: str | None
    session_id: str
    #: ``{"candidate", "sdpMid", "sdpMLineIndex"}`` or ``None`` for end-of-candidates.
    candidate: dict[str, Any] | None
    type: str = "icecandidate"

    def to_message(self) -> dict[str, Any]:
        return _message(self.type, self.request_id, sessionId=self.session_id,
                        candidate=self.candidate)


@dataclass(frozen=True)
class ApiCall:
    request_id: str | None
    method: str
    path: str
    body: Any = None
    type: str = "api"

    def to_message(self) -> dict[str, Any]:
        out = _message(self.type, self.request_id, method=self.method, path=self.path)
        if self.body is not None:
            out["body"] = self.body
        return out


@dataclass(frozen=True)
class Ping:
    request_id: str | None = None
    type: str = "ping"

    def to_message(self) -> dict[str, Any]:
        return _message(self.type, self.request_id)


@dataclass(frozen=True)
class SetUserId:
    request_id: str | None
    user_id: str
    type: str = "set_user_id"

    def to_message(self) -> dict[str, Any]:
        return _message(self.type, self.request_id, user_id=self.user_id)


@dataclass(frozen=True)
class CloseSession:
    """Ask the cloud to end one of this connection's media sessions now. Sent over the
    control socket (TCP) because the peer connection's own DTLS close can be lost on the
    lossy path that made the relay give the session up. Not part of Scope's protocol."""

    request_id: str | None
    session_id: str
    type: str = "close_session"

    def to_message(self) -> dict[str, Any]:
        return _message(self.type, self.request_id, sessionId=self.session_id)


Request = GetIceServers | Offer | IceCandidate | ApiCall | Ping | SetUserId | CloseSession


def load_json(raw: str | bytes, what: str) -> Any:
    """``json.loads`` whose every failure, deep nesting and bad UTF-8 included, is an
    ``InvalidMessage`` naming ``what`` (a peer's bad text must never escape as a 500)."""
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError
        raise InvalidMessage(f"{what} is not valid JSON: {exc}") from None


def load_json_object(raw: str | bytes, what: str) -> dict[str, Any]:
    data = load_json(raw, what)
    if not isinstance(data, dict):
        raise InvalidMessage(f"{what} must be a JSON object, got {type(data).__name__}")
    return data


def decode_json_object(raw: str | bytes) -> dict[str, Any]:
    """Decode one WS text frame into a JSON object with a string ``type``."""
    if isinstance(raw, (bytes, bytearray)):
        if len(raw) > MAX_MESSAGE_BYTES:
            raise InvalidMessage(f"message of {len(raw)} bytes exceeds {MAX_MESSAGE_BYTES}")
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidMessage(f"message is not UTF-8: {exc}") from None
    if len(raw) > MAX_MESSAGE_BYTES:
        raise InvalidMessage(f"message of {len(raw)} characters exceeds {MAX_MESSAGE_BYTES}")
    data = load_json_object(raw, "message")
    msg_type = data.get("type")
    if not isinstance(msg_type, str) or not msg_type:
        raise InvalidMessage("message needs a string 'type'", request_id=_request_id(data))
    return data


def _request_id(data: Mapping[str, Any]) -> str | None:
    rid = data.get("request_id")
    if rid is None:
        return None
    if isinstance(rid, (str, int)) and not isinstance(rid, bool):
        return str(rid)
    return None


def _refusal(data: Mapping[str, Any], message: str,
             kind: type[ProtocolError] = InvalidMessage) -> ProtocolError:
    """``kind`` naming the request ``data`` (whose ``type`` is known to be a string)."""
    return kind(message, request_id=_request_id(data), request_type=data["type"])


def _field(data: Mapping[str, Any], name: str, kind: type | tuple[type, ...],
           *, required: bool = True, default: Any = None) -> Any:
    if name not in data or data[name] is None:
        if required:
            raise _refusal(data, f"'{data['type']}' needs field '{name}'")
        return default
    value = data[name]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        expected = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise _refusal(data, f"field '{name}' of '{data['type']}' must be {expected}, "
                             f"got {type(value).__name__}")
    return value


def parse_request(raw: str | bytes) -> Request:
    """Parse and validate one client -> cloud message.

    Raises :class:`ProtocolError` with ``request_id`` and ``request_type`` set when they
    were readable, so the refusal can take the form that request's reply takes.
    """
    data = decode_json_object(raw)
    rid = _request_id(data)
    if "request_id" in data and data["request_id"] is not None and rid is None:
        raise _refusal(data, "'request_id' must be a string")
    msg_type = data["type"]
    if msg_type == "get_ice_servers":
        return GetIceServers(rid)
    if msg_type == "ping":
        return Ping(rid)
    if msg_type == "set_user_id":
        return SetUserId(rid, str(_field(data, "user_id", (str, int))))
    if msg_type == "offer":
        sdp = _field(data, "sdp", str)
        sdp_type = _field(data, "sdp_type", str, required=False, default="offer")
        if sdp_type != "offer":
            raise _refusal(data, f"'sdp_type' must be 'offer', got {sdp_type!r}")
        params = _field(data, "initialParameters", dict, required=False, default={})
        user_id = _field(data, "user_id", (str, int), required=False)
        return Offer(rid, sdp, sdp_type, dict(params), None if user_id is None else str(user_id))
    if msg_type == "icecandidate":
        session_id = _field(data, "sessionId", str)
        candidate = data.get("candidate")
        if candidate is not None:
            if not isinstance(candidate, dict) or not isinstance(candidate.get("candidate"), str):
                raise _refusal(data,
                               "'candidate' must be null or an object with a string 'candidate'")
        return IceCandidate(rid, session_id, candidate)
    if msg_type == "close_session":
        session_id = _field(data, "sessionId", str)
        if not session_id:
            raise _refusal(data, "'sessionId' must not be empty")
        return CloseSession(rid, session_id)
    if msg_type == "api":
        method = _field(data, "method", str).upper()
        if method not in API_METHODS:
            raise _refusal(data, f"unsupported API method {method!r}")
        path = _field(data, "path", str)
        if not path.startswith("/"):
            raise _refusal(data, f"API path must start with '/', got {path!r}")
        return ApiCall(rid, method, path, data.get("body"))
    raise _refusal(data, f"unknown message type {msg_type!r}", UnknownMessageType)


# --- replies (cloud -> client) ---------------------------------------------------------

def ready(connection_id: str) -> dict[str, Any]:
    """The cloud's first message on every socket: it can serve requests now."""
    return {"type": "ready", "connection_id": connection_id}


def pong(request_id: str | None) -> dict[str, Any]:
    return _message("pong", request_id, status=200)


def user_id_set(user_id: str, request_id: str | None) -> dict[str, Any]:
    return _message("user_id_set", request_id, user_id=user_id, status=200)


def ice_servers(request_id: str | None, servers: list[dict[str, Any]]) -> dict[str, Any]:
    return _message("ice_servers", request_id, status=200, data={"iceServers": servers})


def answer(request_id: str | None, sdp: str, session_id: str) -> dict[str, Any]:
    return _message("answer", request_id, status=200, sdp=sdp, sdp_type="answer",
                    sessionId=session_id)


def icecandidate_ack(request_id: str | None) -> dict[str, Any]:
    return _message("icecandidate_ack", request_id, status=200)


def session_closed(request_id: str | None, session_id: str) -> dict[str, Any]:
    """``close_session`` done: the session is closed (its peer connection and pipeline)."""
    return _message("session_closed", request_id, status=200, sessionId=session_id)


def error(message: str, code: str, request_id: str | None = None,
          status: int = 400) -> dict[str, Any]:
    """A failed request (with its ``request_id``), or an unsolicited error (without)."""
    return _message("error", request_id, error=message, code=code, status=status)


def pipeline_failed(message: str, session_id: str | None = None) -> dict[str, Any]:
    """Unsolicited: a session's pipeline raised and generation for it has stopped. On the
    control socket it names the cloud ``sessionId`` (a client may hold several); the relay
    sends it to the page on the ``parameters`` data channel without one. Scope's client
    consumes ``error`` messages without routing them, so it is harmless there."""
    out = error(message, PipelineFailed.code, status=PipelineFailed.status)
    if session_id is not None:
        out["sessionId"] = session_id
    return out


#: a refused value is echoed back only up to this many characters of its JSON (a sender
#: may have sent megabytes); longer ones come back as a shortened string
MAX_ECHOED_VALUE_CHARS = 200
#: what the cloud (and the relay, passing them on) sends on a ``parameters`` data channel
CHANNEL_NOTICES = frozenset({"parameter_refused", "pipeline_reload_failed"})


def _echoed(value: Any) -> Any:
    try:
        text = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return repr(value)[:MAX_ECHOED_VALUE_CHARS]
    if len(text) <= MAX_ECHOED_VALUE_CHARS:
        return value
    return text[:MAX_ECHOED_VALUE_CHARS - 1] + "…"


def parameter_refused(name: str, value: Any, reason: str) -> dict[str, Any]:
    """On a ``parameters`` data channel, to the sender: a value the cloud did not apply
    (wrong type, out of range, an unknown key beyond the bound); the old value stays."""
    return {"type": "parameter_refused", "name": name, "value": _echoed(value),
            "reason": reason}


def pipeline_reload_failed(pipeline: str, error_text: str) -> dict[str, Any]:
    """On a ``parameters`` data channel: with ``--reload``, the running pipeline's edited
    source did not load; the session goes on with the old code."""
    return {"type": "pipeline_reload_failed", "pipeline": pipeline, "error": error_text}


def parse_channel_notice(raw: Any) -> dict[str, Any] | None:
    """A :data:`CHANNEL_NOTICES` message read from a data channel, or ``None`` for anything
    else (a notice from a newer cloud with fields missing is still passed on)."""
    if not isinstance(raw, str) or len(raw) > MAX_MESSAGE_BYTES:
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(data, dict) or data.get("type") not in CHANNEL_NOTICES:
        return None
    return data


def error_from(exc: ProtocolError, request_id: str | None = None) -> dict[str, Any]:
    rid = request_id if request_id is not None else exc.request_id
    return error(exc.message, exc.code, rid, exc.status)


def failure(exc: ProtocolError, request_type: str | None = None,
            request_id: str | None = None) -> dict[str, Any]:
    """The reply to a request that failed (by default the one the error names). ``api``
    calls fail as an ``api_response`` (Scope's client routes only that back to its caller;
    an ``error`` would leave it waiting 30 s), everything else as ``error``."""
    rid = request_id if request_id is not None else exc.request_id
    if (request_type or exc.request_type) == "api":
        return api_response(rid, exc.status, {"detail": exc.message}, exc.message, exc.code)
    return error_from(exc, rid)


def api_response(request_id: str | None, status: int, data: Any,
                 error_message: str | None = None, code: str | None = None) -> dict[str, Any]:
    """An ``api`` reply. ``data`` is always an object; failures carry ``data.detail``."""
    if not isinstance(data, dict):
        data = {"detail": error_message} if error_message else {"value": data}
    reply = _message("api_response", request_id, status=status, data=data)
    if status >= 400:
        reply["error"] = error_message or str(data.get("detail", "request failed"))
        reply["code"] = code or UnnamedApiError.code
        data.setdefault("detail", reply["error"])
    return reply


def logs(lines: list[str]) -> list[dict[str, Any]]:
    """Split log lines into ``logs`` messages of at most :data:`MAX_LOG_LINES` lines."""
    return [{"type": "logs", "lines": lines[i:i + MAX_LOG_LINES]}
            for i in range(0, len(lines), MAX_LOG_LINES)]


def encode(message: Mapping[str, Any]) -> str:
    """Serialise a message, refusing any that would break the 4 MiB limit."""
    # Raw UTF-8 (at most 4 bytes a character) instead of \u escapes (up to 12 for an emoji),
    # unless the text holds lone surrogates, which only an escape can carry.
    text = json.dumps(message, separators=(",", ":"), allow_nan=False, ensure_ascii=False)
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        text = json.dumps(message, separators=(",", ":"), allow_nan=False)
        size = len(text)
    if size > MAX_MESSAGE_BYTES:
        raise ValueError(f"{message.get('type')} message exceeds {MAX_MESSAGE_BYTES} bytes")
    return text


# --- replies, read by a client ----------------------------------------------------------

@dataclass(frozen=True)
class ErrorReply:
    """An ``error`` message: a refused request, or (without ``request_id``) the cloud's
    reason for closing, or (with ``session_id``) news about one media session."""

    message: str
    code: str
    status: int
    session_id: str | None = None


@dataclass(frozen=True)
class Answer:
    sdp: str
    session_id: str


@dataclass(frozen=True)
class ApiReply:
    """An ``api_response`` as a REST reply: a failure's ``data`` carries ``error`` and
    ``code`` beside ``detail``, as the relay's own REST errors do."""

    status: int
    data: dict[str, Any]


def parse_error(reply: Mapping[str, Any]) -> ErrorReply:
    status = reply.get("status")
    session_id = reply.get("sessionId")
    return ErrorReply(str(reply.get("error") or "cloud error"), str(reply.get("code") or UnnamedError.code),
                      status if isinstance(status, int) and not isinstance(status, bool)
                      and 400 <= status <= 599 else 502,
                      session_id if isinstance(session_id, str) and session_id else None)


def parse_ready(message: Mapping[str, Any]) -> str | None:
    """The ``connection_id`` of a ``ready`` message (``None`` if the cloud sent none)."""
    if message.get("type") != "ready":
        raise InvalidMessage(f"expected 'ready' first, got {message.get('type')!r}")
    connection_id = message.get("connection_id")
    return connection_id if isinstance(connection_id, str) else None


def parse_ice_servers(reply: Mapping[str, Any]) -> list[dict[str, Any]]:
    data = reply.get("data")
    servers = data.get("iceServers") if isinstance(data, dict) else None
    if servers is None:
        return []
    if not isinstance(servers, list) or not all(isinstance(s, dict) for s in servers):
        raise InvalidMessage("'ice_servers' reply: data.iceServers must be a list of objects")
    return servers


def parse_answer(reply: Mapping[str, Any]) -> Answer:
    sdp, session_id = reply.get("sdp"), reply.get("sessionId")
    if not isinstance(sdp, str) or not isinstance(session_id, str):
        raise InvalidMessage("'answer' reply needs a string 'sdp' and 'sessionId'")
    return Answer(sdp, session_id)


def parse_api_response(reply: Mapping[str, Any]) -> ApiReply:
    data = reply.get("data")
    data = dict(data) if isinstance(data, dict) else {}
    status = reply.get("status", 200)  # Scope's convention: no status is success
    if not isinstance(status, int) or isinstance(status, bool):
        raise InvalidMessage("'api_response' status must be an integer")
    if status >= 400:
        data["error"] = str(reply.get("error") or data.get("detail") or "failed")
        data["code"] = str(reply.get("code") or UnnamedCloudError.code)
    return ApiReply(status, data)


def parse_logs(message: Mapping[str, Any]) -> list[str]:
    lines = message.get("lines")
    return [str(line) for line in lines] if isinstance(lines, list) else []
