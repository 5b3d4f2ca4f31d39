"""The desktop relay (no torch): serves the page, bridges each browser session to the
cloud app over WebRTC, and proxies the cloud's API.

``create_relay_app(RelayConfig(CloudTarget(ws_url)))`` is the public factory.
"""

from scope_relay.local.cloud_link.target import CloudTarget, resolve_cloud_target
from scope_relay.local.server import LocalRelay, RelayConfig, create_relay_app

__all__ = ["CloudTarget", "LocalRelay", "RelayConfig", "create_relay_app",
           "resolve_cloud_target"]
