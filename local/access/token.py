"""Beyond this machine, only the holder of the relay's token drives it.

Served on a LAN address (``--host 0.0.0.0``, to watch from a phone), the relay is reachable
by every neighbour on that network, and the host-name checks of ``same_origin.py`` stop
only other web pages, not another device. So a relay bound beyond loopback makes a token
at start (or takes ``--token``) and prints it once, inside the URL to open
(``http://<host>:<port>/?token=...``). Opening that URL trades the token for an HttpOnly,
SameSite=Strict cookie and redirects to the same address without it (so it stays out of
history, bookmarks and ``Referer``); scripts send ``Authorization: Bearer <token>``.
Anything else from another host gets ``401 UNAUTHORIZED``.

Not guarded: the relay's own machine (its clients connect from 127.0.0.1 or ::1, unless
``--require-token``), the page and its static files (code, no data: the page must load
even when the browser withholds a Strict cookie after a cross-site link, and its API calls
then carry the cookie), and the viewer routes, whose share token is the capability
(``local/sessions/viewers.py``: a share link grants watching, nothing more), and with them
the WHEP and MPEG-TS outputs that the same share token opens (``local/outputs/``).

Tokens are compared as SHA-256 digests with :func:`hmac.compare_digest`: equal lengths,
constant time, so neither a wrong token's length nor its prefix changes the timing.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import secrets
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from urllib.parse import quote, urlencode

from aiohttp import web

from scope_relay.protocol.errors import Unauthorized

#: Where this machine's own clients connect from: on Linux a connection to any 127.0.0.0/8
#: address leaves from 127.0.0.1 unless the client binds another, so this is exact for
#: real clients, and a test binding 127.0.0.3 is, to the relay, a LAN neighbour.
LOCAL_CLIENTS = frozenset({ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")})
#: Listening on one of these keeps the relay on this machine: no token needed.
LOOPBACK_LISTEN = frozenset({"127.0.0.1", "::1", "localhost"})
#: Listening on these means "every address" (the URL printed then names 127.0.0.1).
WILDCARD_ADDRESSES = frozenset({"", "0.0.0.0", "::"})
#: The query parameter that carries the token once.
QUERY = "token"
#: (method, route) open to all: the static page, and the viewer routes and outputs a share
#: token opens (WHEP, MPEG-TS: local/outputs/; the token is inside the request).
PUBLIC_ROUTES = frozenset({
    *((m, p) for m in ("GET", "HEAD") for p in ("/", "/viewer", "/static", "/ts/{share_token}")),
    ("POST", "/api/v1/webrtc/viewer"),
    ("GET", "/api/v1/webrtc/viewer/{viewer_id}"),
    ("DELETE", "/api/v1/webrtc/viewer/{viewer_id}"),
    ("POST", "/whep/{share_token}"),
    ("DELETE", "/whep/{share_token}/{resource_id}"),
})
ACCESS_LOGGER = "aiohttp.access"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def new_token() -> str:
    """256 random bits, URL-safe."""
    return secrets.token_urlsafe(32)


def token_needed(listen_host: str, *, require_locally: bool) -> bool:
    """A relay served beyond loopback needs a token; on loopback only when asked to."""
    return require_locally or listen_host.strip("[]").lower() not in LOOPBACK_LISTEN


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).digest()


@dataclass(frozen=True)
class TokenPolicy:
    """The relay's token, and whether this machine's own clients need it too."""

    token: str
    #: False (``--require-token``): loopback clients need the token as well, e.g. when a
    #: reverse proxy on this machine forwards the LAN's requests
    local_exempt: bool = True

    def __post_init__(self) -> None:
        if not self.token:
            raise ValueError("the relay's token must not be empty")

    def matches(self, candidate: str) -> bool:
        """Constant time whatever ``candidate`` is (digests have one length)."""
        return hmac.compare_digest(_digest(candidate), _digest(self.token))

    def cookie_value(self) -> str:
        """What the cookie holds: derived from the token (hex, cookie-safe), not the token."""
        return hmac.new(self.token.encode("utf-8", "surrogateescape"), b"scope-relay cookie",
                        hashlib.sha256).hexdigest()

    def cookie_matches(self, candidate: str) -> bool:
        return hmac.compare_digest(_digest(candidate), _digest(self.cookie_value()))

    def authorised(self, request: web.Request) -> bool:
        """The request carries the cookie or ``Authorization: Bearer <token>``."""
        cookie = request.cookies.get(cookie_name(request))
        if cookie is not None and self.cookie_matches(cookie):
            return True
        scheme, _, credentials = request.headers.get("Authorization", "").strip().partition(" ")
        return scheme.lower() == "bearer" and self.matches(credentials.strip())

    def exempt(self, request: web.Request) -> bool:
        return self.local_exempt and is_local_client(request)


def is_local_client(request: web.Request) -> bool:
    """The peer address (the socket's, never a forwarded header) is 127.0.0.1 or ::1."""
    peer = request.transport.get_extra_info("peername") if request.transport else None
    if not peer:
        return False
    try:
        address = ipaddress.ip_address(peer[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address in LOCAL_CLIENTS


def cookie_name(request: web.Request) -> str:
    """One cookie per port: cookies ignore ports, and two relays on one host must not mix."""
    sockname = request.transport.get_extra_info("sockname") if request.transport else None
    return f"scope-relay-token-{sockname[1] if sockname else 0}"


def is_public(request: web.Request) -> bool:
    route = request.match_info.route
    if request.match_info.http_exception is not None:  # no route: no hint which exist
        return False
    return (request.method, route.resource.canonical if route.resource else "") in PUBLIC_ROUTES


def _unauthorised(message: str) -> web.Response:
    return web.json_response({"error": message, "code": Unauthorized.code},
                             status=Unauthorized.status,
                             headers={"WWW-Authenticate": 'Bearer realm="scope-relay"'})


NEEDS_TOKEN = ("this relay needs its token: open the address it printed at start "
               "(http://<host>:<port>/?token=...), or send 'Authorization: Bearer <token>'")


def _without_token(request: web.Request) -> str:
    """The request's own path and query less the token; always a path on this server
    (leading slashes folded, so ``//evil.example/`` cannot become another host)."""
    location = "/" + request.rel_url.raw_path.lstrip("/\\")
    rest = [(k, v) for k, v in request.rel_url.query.items() if k != QUERY]
    return location + (f"?{urlencode(rest)}" if rest else "")


def _exchange(policy: TokenPolicy, request: web.Request) -> web.StreamResponse:
    """``GET ...?token=<right one>``: the cookie, and the same address without the token."""
    response = web.Response(status=303, headers={"Location": _without_token(request)})
    response.set_cookie(cookie_name(request), policy.cookie_value(), path="/", httponly=True,
                        samesite="Strict")
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


def token_middleware(policy: TokenPolicy) -> Callable[..., Awaitable[web.StreamResponse]]:
    @web.middleware
    async def token_access(request: web.Request, handler: Handler) -> web.StreamResponse:
        exempt = policy.exempt(request)
        given = request.query.get(QUERY) if request.method in ("GET", "HEAD") else None
        if given is not None:
            if policy.matches(given):
                return _exchange(policy, request)
            if not exempt:
                return _unauthorised("wrong token: open the address the relay printed at start")
        if exempt or is_public(request) or policy.authorised(request):
            return await handler(request)
        return _unauthorised(NEEDS_TOKEN)

    return token_access


class RedactToken(logging.Filter):
    """Keeps the token out of aiohttp's access log (``GET /?token=...`` lines): it is
    printed once, at start, and nowhere else."""

    def __init__(self, token: str):
        super().__init__()
        self.secrets = {token, quote(token, safe="")}

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if any(secret in message for secret in self.secrets):
            for secret in self.secrets:
                message = message.replace(secret, "<token>")
            record.msg, record.args = message, None
        return True


def guard_with_token(app: web.Application, policy: TokenPolicy) -> None:
    """Add the middleware (after any already there) and the access-log redaction, for
    the app's lifetime."""
    app.middlewares.append(token_middleware(policy))
    redact = RedactToken(policy.token)

    async def on_startup(app: web.Application) -> None:
        logging.getLogger(ACCESS_LOGGER).addFilter(redact)

    async def on_cleanup(app: web.Application) -> None:
        logging.getLogger(ACCESS_LOGGER).removeFilter(redact)

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)


def page_url(listen_host: str, allow_hosts: Iterable[str], port: int, token: str) -> str:
    """The URL to print: the first ``--allow-host`` (the LAN name a phone uses), else the
    listening address, else 127.0.0.1; the token inside."""
    names = [h.strip("[]") for h in allow_hosts]
    if listen_host not in WILDCARD_ADDRESSES:
        names.append(listen_host.strip("[]"))
    name = names[0] if names else "127.0.0.1"
    shown = f"[{name}]" if ":" in name else name
    return f"http://{shown}:{port}/?{QUERY}={quote(token, safe='')}"
