"""Typed protocol errors: every failure at a boundary carries a machine code."""

from __future__ import annotations


class ProtocolError(Exception):
    """A request or message that the other side cannot act on.

    ``code`` is the machine-readable code sent in ``error`` replies; ``status`` is the
    HTTP-like status used where a reply carries one (``api_response``, REST).
    """

    code = "BAD_REQUEST"
    status = 400

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status


class InvalidMessage(ProtocolError):
    code = "INVALID_MESSAGE"


class UnknownMessageType(ProtocolError):
    code = "UNKNOWN_TYPE"


class NotReady(ProtocolError):
    code = "NOT_READY"
    status = 409


class NotFound(ProtocolError):
    code = "NOT_FOUND"
    status = 404


class UnknownPipeline(ProtocolError):
    code = "UNKNOWN_PIPELINE"
    status = 404


class UnknownSession(ProtocolError):
    code = "UNKNOWN_SESSION"
    status = 404


class InvalidSdp(ProtocolError):
    code = "INVALID_SDP"


class AccessDenied(ProtocolError):
    code = "ACCESS_DENIED"
    status = 403


class RequestTimeout(ProtocolError):
    code = "TIMEOUT"
    status = 504


class Busy(ProtocolError):
    code = "BUSY"
    status = 429


class Unavailable(ProtocolError):
    code = "UNAVAILABLE"
    status = 503


class Draining(ProtocolError):
    """The cloud app is shutting down: it finishes live sessions but takes no new ones."""

    code = "DRAINING"
    status = 503


class InvalidAudio(ProtocolError):
    """Audio whose dtype, shape or format cannot be interpreted without guessing."""

    code = "INVALID_AUDIO"


class Unauthorized(ProtocolError):
    """A request without the right API key (HTTP 401 before any WebSocket upgrade)."""

    code = "UNAUTHORIZED"
    status = 401


class RateLimited(ProtocolError):
    """A control socket that stayed over its message budget: told so, then closed (1008)."""

    code = "RATE_LIMITED"
    status = 429


class TooManyConnections(ProtocolError):
    """A WebSocket upgrade refused (HTTP 429) because its address or key already holds the
    most control sockets allowed."""

    code = "TOO_MANY_CONNECTIONS"
    status = 429


class PipelineFailed(ProtocolError):
    """A pipeline raised, while loading or mid-stream. Mid-stream it ends generation for
    that session only; the client is told (an unsolicited ``error`` naming the session)
    and the app keeps serving everyone else."""

    code = "PIPELINE_FAILED"
    status = 500
