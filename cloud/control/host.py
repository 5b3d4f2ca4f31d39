"""What a control channel uses of the app that serves it, and nothing more.

The channel (cloud/control/channel.py) is written against these protocols, not against
the app's state, so it never imports cloud/app.py (which imports the channel). The app's
``CloudState`` and ``CloudConfig`` satisfy them as they are; mypy checks that where
cloud/app.py hands its state to a channel.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from scope_relay.cloud.api import ApiRouter
    from scope_relay.cloud.control.ice_servers import IceServerConfig
    from scope_relay.cloud.control.log_forwarding import LogHub
    from scope_relay.cloud.sessions.media_session import MediaSession


class ChannelSettings(Protocol):
    """The settings a channel reads (fields of ``CloudConfig``)."""

    @property
    def request_timeout(self) -> float: ...
    @property
    def max_session_seconds(self) -> float | None: ...
    @property
    def require_user_id(self) -> bool: ...
    @property
    def allowed_user_ids(self) -> Collection[str] | None: ...
    @property
    def max_bad_messages(self) -> int: ...
    @property
    def message_rate(self) -> float | None: ...
    @property
    def message_burst(self) -> int: ...
    @property
    def rate_limit_close_after(self) -> float | None: ...
    @property
    def rate_limit_window(self) -> float: ...
    @property
    def max_requests_in_flight(self) -> int: ...
    @property
    def log_interval(self) -> float: ...


class ChannelHost(Protocol):
    """The app as one channel sees it: its settings, the shared services a request uses,
    the media sessions (created, found and closed on the channel's behalf) and the one
    app-wide figure a channel adds to."""

    @property
    def config(self) -> ChannelSettings: ...
    #: set once the app serves requests (pipelines preloaded): a channel's ``ready``
    #: message waits for it
    @property
    def ready(self) -> asyncio.Event: ...
    @property
    def log_hub(self) -> LogHub: ...
    @property
    def ice(self) -> IceServerConfig: ...
    @property
    def router(self) -> ApiRouter: ...
    @property
    def sessions(self) -> Mapping[str, MediaSession]: ...

    async def create_session(self, sdp: str, initial_parameters: dict[str, Any],
                             owner: str | None = None) -> MediaSession: ...

    async def close_session(self, session_id: str) -> None: ...

    def owned_session(self, session_id: str, owner: str) -> MediaSession | None: ...

    def count_rate_limited_socket(self) -> None:
        """A socket is being closed for staying over its message budget."""
