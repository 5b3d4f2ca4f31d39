"""Only the user's own page drives the relay.

The relay listens on the user's machine, where every web page they open can send it
requests: a "simple" cross-origin POST (``text/plain``, no preflight) reaches a handler
even though its answer cannot be read, and a DNS-rebinding page reaches it under a name
of its own. So every request must name the relay by one of its own host names
(``Host``), a request from a page must come from the relay's own origin (``Origin``, when
the browser sends one), and an API body must be declared JSON, which no simple request
can do. No CORS headers are ever sent: other origins cannot read answers either.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from aiohttp import web

from scope_relay.protocol.errors import ForbiddenHost, ForbiddenOrigin, UnsupportedMediaType

#: Names a browser on this machine uses for the relay (with the port it listens on).
LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})
#: Listening on these means "every address": they name no host a browser would use.
WILDCARD_ADDRESSES = frozenset({"", "0.0.0.0", "::"})
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class SameOriginPolicy:
    """Host names the relay answers to (any port it listens on) and extra origins allowed
    to drive it (exact ``scheme://host[:port]`` strings, e.g. a dev server's)."""

    hosts: frozenset[str] = LOOPBACK_NAMES
    origins: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def for_listener(cls, listen_host: str, allow_hosts: Iterable[str] = (),
                     allow_origins: Iterable[str] = ()) -> SameOriginPolicy:
        hosts = set(LOOPBACK_NAMES) | {h.strip("[]").lower() for h in allow_hosts}
        if listen_host not in WILDCARD_ADDRESSES:
            hosts.add(listen_host.strip("[]").lower())
        return cls(frozenset(hosts), frozenset(o.rstrip("/").lower() for o in allow_origins))

    def check(self, request: web.Request) -> None:
        """Raise a :class:`ProtocolError` (403/415) for a request the user's page would
        never send."""
        host_header = request.headers.get("Host", "")
        name, port = _split_host(host_header)
        if name not in self.hosts or port not in _listening_ports(request):
            raise ForbiddenHost(f"the relay does not answer to Host {host_header!r}; "
                                "start it with --allow-host to add a name")
        origin = request.headers.get("Origin")
        if origin is not None and origin.rstrip("/").lower() not in self._origins(host_header):
            raise ForbiddenOrigin(f"requests from {origin!r} may not drive the relay; "
                                  "start it with --allow-origin to allow one")
        unrouted = request.match_info.http_exception is not None  # its 404/405 says more
        if (request.method in BODY_METHODS and request.path.startswith("/api/")
                and not unrouted and request.content_type != "application/json"):
            raise UnsupportedMediaType("API requests must send a JSON body (Content-Type: application/json)")

    def _origins(self, host_header: str) -> set[str]:
        return {f"http://{host_header.lower()}", f"https://{host_header.lower()}", *self.origins}


def _split_host(value: str) -> tuple[str, int | None]:
    """``Host`` header -> (lower-case name, port or ``None``); brackets of IPv6 removed."""
    try:
        parts = urlsplit(f"//{value}")
        return (parts.hostname or "").lower(), parts.port
    except ValueError:  # a port that is no number, stray brackets, ...
        return "", None


def _listening_ports(request: web.Request) -> set[int | None]:
    """The port this request came in on (and ``None`` where it is the scheme's default)."""
    sockname = request.transport.get_extra_info("sockname") if request.transport else None
    port = sockname[1] if sockname else None
    ports: set[int | None] = {port}
    if port in (80, 443):
        ports.add(None)
    return ports


def same_origin_middleware(policy: SameOriginPolicy) -> Callable[..., Awaitable[web.StreamResponse]]:
    @web.middleware
    async def same_origin(request: web.Request, handler: Handler) -> web.StreamResponse:
        policy.check(request)
        return await handler(request)

    return same_origin
