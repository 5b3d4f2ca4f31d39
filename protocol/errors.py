"""The error catalogue: every code the cloud app or the relay sends, each declared once.

Each code is a :class:`ProtocolError` subclass with its ``code`` and ``status``; raising
sites use the class, never a code string (tests/unit/test_error_catalogue.py checks the
packages, the page's JS and docs/protocol.md's table against :func:`catalogue`).
"""

from __future__ import annotations


class ProtocolError(Exception):
    """A request or message that the other side cannot act on.

    ``code`` is the machine-readable code sent in ``error`` replies; ``status`` is the
    HTTP-like status used where a reply carries one (``api_response``, REST).
    ``request_id`` and ``request_type`` name the refused request when it could be read:
    the reply then carries the id, and an ``api`` request fails as an ``api_response``.
    """

    code: str = "BAD_REQUEST"
    status: int = 400

    def __init__(self, message: str, *, request_id: str | None = None,
                 request_type: str | None = None):
        super().__init__(message)
        self.message = message
        self.request_id = request_id
        self.request_type = request_type


# --- requests and messages ------------------------------------------------------------

class InvalidMessage(ProtocolError):
    code = "INVALID_MESSAGE"


class UnknownMessageType(ProtocolError):
    code = "UNKNOWN_TYPE"


class InvalidSdp(ProtocolError):
    code = "INVALID_SDP"


class InvalidAudio(ProtocolError):
    """Audio whose dtype, shape or format cannot be interpreted without guessing."""

    code = "INVALID_AUDIO"


class TooLarge(ProtocolError):
    """A reply that would break the 4 MiB message limit, sent in its place."""

    code = "TOO_LARGE"
    status = 413


class NotFound(ProtocolError):
    code = "NOT_FOUND"
    status = 404


class MethodNotAllowed(ProtocolError):
    code = "METHOD_NOT_ALLOWED"
    status = 405


class RequestEntityTooLarge(ProtocolError):
    """Relay: a request body over the server's size limit (aiohttp's 413; the relay names
    the HTTP errors aiohttp raises by their reason in capitals)."""

    code = "REQUEST_ENTITY_TOO_LARGE"
    status = 413


class Forbidden(ProtocolError):
    """Relay: a static path aiohttp will not serve (a directory)."""

    code = "FORBIDDEN"
    status = 403


class Internal(ProtocolError):
    """A bug of ours: logged, answered, and the server keeps serving."""

    code = "INTERNAL"
    status = 500


# --- access and budgets ---------------------------------------------------------------

class Unauthorized(ProtocolError):
    """A request without the right API key (HTTP 401 before any WebSocket upgrade)."""

    code = "UNAUTHORIZED"
    status = 401


class AccessDenied(ProtocolError):
    code = "ACCESS_DENIED"
    status = 403


class ForbiddenHost(ProtocolError):
    """Relay: a request naming it by a host name that is not its own (DNS rebinding)."""

    code = "FORBIDDEN_HOST"
    status = 403


class ForbiddenOrigin(ProtocolError):
    """Relay: a request from another web page's origin."""

    code = "FORBIDDEN_ORIGIN"
    status = 403


class UnsupportedMediaType(ProtocolError):
    """Relay: an API body not declared JSON (what a cross-origin "simple" request sends)."""

    code = "UNSUPPORTED_MEDIA_TYPE"
    status = 415


class Busy(ProtocolError):
    code = "BUSY"
    status = 429


class RateLimited(ProtocolError):
    """A control socket that stayed over its message budget: told so, then closed (1008)."""

    code = "RATE_LIMITED"
    status = 429


class TooManyConnections(ProtocolError):
    """A WebSocket upgrade refused (HTTP 429) because its address or key already holds the
    most control sockets allowed."""

    code = "TOO_MANY_CONNECTIONS"
    status = 429


class MaxDurationExceeded(ProtocolError):
    """Unsolicited, before the cloud closes a socket at its ``--max-session-seconds``."""

    code = "MAX_DURATION_EXCEEDED"


# --- sessions and pipelines -----------------------------------------------------------

class UnknownPipeline(ProtocolError):
    code = "UNKNOWN_PIPELINE"
    status = 404


class UnknownSession(ProtocolError):
    code = "UNKNOWN_SESSION"
    status = 404


class NotReady(ProtocolError):
    code = "NOT_READY"
    status = 409


class NotLoaded(ProtocolError):
    """Relay: the cloud reports the chain not loaded after the load call."""

    code = "NOT_LOADED"
    status = 409


class PipelineFailed(ProtocolError):
    """A pipeline raised, while loading or mid-stream. Mid-stream it ends generation for
    that session only; the client is told (an unsolicited ``error`` naming the session)
    and the app keeps serving everyone else."""

    code = "PIPELINE_FAILED"
    status = 500


# --- availability ---------------------------------------------------------------------

class RequestTimeout(ProtocolError):
    code = "TIMEOUT"
    status = 504


class Unavailable(ProtocolError):
    code = "UNAVAILABLE"
    status = 503


class Draining(ProtocolError):
    """The cloud app is shutting down: it finishes live sessions but takes no new ones."""

    code = "DRAINING"
    status = 503


class CloudRefused(ProtocolError):
    """Relay: a failure no retry fixes by itself: the key was refused, or there is no cloud
    app at the URL. Requests fail at once with it instead of waiting for ``ready``."""

    code = "CLOUD_REFUSED"
    status = 503


# --- the relay's share links and recordings -------------------------------------------

class UnknownShare(ProtocolError):
    """No live session has this share link (it ended, or the link is wrong)."""

    code = "UNKNOWN_SHARE"
    status = 404


class TooManyViewers(ProtocolError):
    code = "TOO_MANY_VIEWERS"
    status = 429


class TooManyRecordings(ProtocolError):
    code = "TOO_MANY_RECORDINGS"
    status = 429


class AlreadyRecording(ProtocolError):
    code = "ALREADY_RECORDING"
    status = 409


class NothingToRecord(ProtocolError):
    code = "NOTHING_TO_RECORD"
    status = 409


class RecordingActive(ProtocolError):
    """The file of a recording that is still running was asked for."""

    code = "RECORDING_ACTIVE"
    status = 409


class RecordingFailed(ProtocolError):
    code = "RECORDING_FAILED"
    status = 500


class OscPinned(ProtocolError):
    """OSC is pinned to another live session; only that session's page can move the pin."""

    code = "OSC_PINNED"
    status = 409


class OscOff(ProtocolError):
    """The OSC API while the relay listens for no OSC (no ``--osc-port``)."""

    code = "OSC_OFF"
    status = 409


class InsufficientStorage(ProtocolError):
    """A recording refused at start: the disk is below its free-space reserve, or the
    recordings folder is at its budget with running recordings."""

    code = "INSUFFICIENT_STORAGE"
    status = 507


# --- stand-ins for a failure that named no code ---------------------------------------

class Unnamed(ProtocolError):
    """The code put on a failure that came without one; it keeps that failure's status
    (``status`` here is only what a raise of it would use). Never raised by our code."""

    status = 502


class UnnamedApiError(Unnamed):
    """A failed ``api_response`` built without a code."""

    code = "API_ERROR"


class UnnamedError(Unnamed):
    """Relay: an ``error`` reply from the cloud without a code."""

    code = "ERROR"


class UnnamedCloudError(Unnamed):
    """Relay: a failed ``api_response`` from the cloud without a code."""

    code = "CLOUD_ERROR"


class LoadFailed(Unnamed):
    """Relay: a failed pipeline load the cloud gave no code for."""

    code = "LOAD_FAILED"


def catalogue() -> list[type[ProtocolError]]:
    """Every class of this module that declares a code, the base (``BAD_REQUEST``) first."""
    found: list[type[ProtocolError]] = []
    pending: list[type[ProtocolError]] = [ProtocolError]
    while pending:
        cls = pending.pop(0)
        if cls.__module__ == __name__ and "code" in vars(cls):
            found.append(cls)
        pending.extend(cls.__subclasses__())
    return found
