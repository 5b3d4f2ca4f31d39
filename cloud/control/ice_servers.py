"""ICE servers handed to clients: static STUN/TURN, or TURN REST credentials from a secret.

TURN REST credentials (coturn ``--use-auth-secret``): username ``<expiry>:<user>``,
password ``base64(HMAC-SHA1(secret, username))``, fresh for every ``get_ice_servers``
(each new peer connection asks again).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from dataclasses import dataclass, field
from typing import Any


def turn_rest_credentials(secret: str, user: str, ttl: int, now: float | None = None) -> tuple[str, str]:
    expiry = int((time.time() if now is None else now) + ttl)
    username = f"{expiry}:{user}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode()


@dataclass
class IceServerConfig:
    stun_urls: list[str] = field(default_factory=list)
    turn_urls: list[str] = field(default_factory=list)
    turn_secret: str | None = None
    turn_username: str | None = None
    turn_password: str | None = None
    #: Credentials must outlive the session: aioice refreshes its TURN allocation with the
    #: credentials it started with, so an expired one drops the call (the relay then
    #: rebuilds the cloud hop with fresh ones). A day covers any real session.
    ttl: int = 86_400

    def servers(self, user: str = "scope") -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if self.stun_urls:
            out.append({"urls": list(self.stun_urls)})
        if self.turn_urls:
            username: str | None
            credential: str | None
            if self.turn_secret:
                username, credential = turn_rest_credentials(self.turn_secret, user, self.ttl)
            else:
                username, credential = self.turn_username, self.turn_password
            entry: dict[str, Any] = {"urls": list(self.turn_urls)}
            if username is not None:
                entry.update(username=username, credential=credential)
            out.append(entry)
        return out
