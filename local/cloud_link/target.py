"""Where the cloud app is: ``SCOPE_CLOUD_*`` resolved as docs/protocol.md says."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

DEFAULT_BASE_URL = "wss://fal.run"

ENVIRONMENT_HELP = """\
environment:
  SCOPE_CLOUD_APP_ID    cloud app to use: "owner/app" (optionally ".../ws"), resolved
                        against SCOPE_CLOUD_BASE_URL, or a full ws:// / wss:// URL.
                        Unset: run an embedded cloud app on 127.0.0.1.
  SCOPE_CLOUD_WS_URL    full WebSocket URL of the cloud app; wins over SCOPE_CLOUD_APP_ID.
                        `scope-relay local --cloud URL|OWNER/APP` wins over both.
  SCOPE_CLOUD_BASE_URL  base for "owner/app" ids (default wss://fal.run).
  SCOPE_CLOUD_API_KEY   sent as "Authorization: Key <key>"; also the key the cloud app
                        requires when started with `scope-relay cloud`.
  SCOPE_RELAY_ICE_LOOPBACK=1  gather only 127.0.0.1 ICE candidates on every hop (tests,
                        benchmarks; a real browser on another machine cannot connect then).
"""


@dataclass(frozen=True)
class CloudTarget:
    ws_url: str
    api_key: str | None = None
    app_id: str | None = None

    @property
    def is_loopback(self) -> bool:
        host = urlsplit(self.ws_url).hostname or ""
        return host in ("127.0.0.1", "localhost", "::1") or host.startswith("127.")


def resolve_app_id(app_id: str, base_url: str = DEFAULT_BASE_URL) -> str:
    """``owner/app`` -> ``{base}/owner/app/ws``; a full ws(s) URL is used as is."""
    app_id = app_id.strip()
    if app_id.startswith(("ws://", "wss://")):
        return app_id
    if app_id.startswith(("http://", "https://")):
        raise ValueError(f"SCOPE_CLOUD_APP_ID must be owner/app or a ws:// URL, not {app_id!r}")
    path = app_id.strip("/")
    if path.endswith("/ws"):
        path = path[: -len("/ws")]
    if path.count("/") != 1 or not all(path.split("/")):
        raise ValueError(f"SCOPE_CLOUD_APP_ID must look like owner/app, got {app_id!r}")
    return f"{base_url.rstrip('/')}/{path}/ws"


def resolve_cloud_target(env: Mapping[str, str] | None = None,
                         cloud: str | None = None) -> CloudTarget | None:
    """The configured cloud app, or ``None`` when the relay should embed one. ``cloud`` (the
    ``--cloud`` flag: a ws(s):// URL or an ``owner/app`` id) wins over the environment."""
    env = os.environ if env is None else env
    api_key = env.get("SCOPE_CLOUD_API_KEY") or None
    if cloud:
        cloud = cloud.strip()
        if cloud.startswith(("ws://", "wss://")):
            return CloudTarget(cloud, api_key)
        if cloud.startswith(("http://", "https://")):
            raise ValueError(f"--cloud must be a ws:// or wss:// URL or owner/app, not {cloud!r}")
        base = env.get("SCOPE_CLOUD_BASE_URL") or DEFAULT_BASE_URL
        try:
            return CloudTarget(resolve_app_id(cloud, base), api_key, cloud)
        except ValueError:
            raise ValueError(f"--cloud must be a ws:// or wss:// URL or owner/app, "
                             f"got {cloud!r}") from None
    app_id = env.get("SCOPE_CLOUD_APP_ID") or None
    ws_url = env.get("SCOPE_CLOUD_WS_URL") or None
    if ws_url:
        if not ws_url.startswith(("ws://", "wss://")):
            raise ValueError(f"SCOPE_CLOUD_WS_URL must be a ws:// or wss:// URL, got {ws_url!r}")
        return CloudTarget(ws_url, api_key, app_id)
    if app_id:
        base = env.get("SCOPE_CLOUD_BASE_URL") or DEFAULT_BASE_URL
        return CloudTarget(resolve_app_id(app_id, base), api_key, app_id)
    return None
