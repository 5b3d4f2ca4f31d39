"""A relay whose cloud sits across the loss lab, with a page-like peer playing on it: the
set-up the loss-lab tests (test_loss_lab, test_cloud_session_close) share."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx

from scope_relay.local.cloud_link.target import CloudTarget
from scope_relay.local.server import RelayConfig, create_relay_app
from scope_relay.rtc.ice import loopback_candidates
from scope_relay.util.serve import serve

from helpers.losslab import LossLab
from helpers.peers import BrowserPeer


@contextlib.asynccontextmanager
async def relay_session(lab: LossLab, offer: dict[str, Any], *, video: bool = True,
                        audio_frames: int = 25, video_frames: int = 0,
                        ) -> AsyncIterator[tuple[BrowserPeer, Callable[[], Awaitable[dict]]]]:
    """A relay whose cloud is across the lab, and a page-like peer playing ``offer`` on it
    (its own hop on 127.0.0.1): ``(peer, relay_stats)``, the session's figures on demand."""
    relay_app = create_relay_app(RelayConfig(CloudTarget(lab.ws_url), loopback_ice=True))
    async with serve(relay_app) as relay, \
            httpx.AsyncClient(base_url=relay.url, timeout=10) as http:
        peer = BrowserPeer(video=video)
        try:
            with loopback_candidates():  # the receiver's own hop stays on 127.0.0.1
                response = await peer.connect_relay(relay.url, offer)
            assert response.status_code == 200, response.text
            await peer.wait_audio_frames(audio_frames, timeout=45)
            if video_frames:
                await peer.wait_video_frames(video_frames, timeout=20)

            async def relay_stats() -> dict:
                return (await http.get(f"/api/v1/webrtc/offer/{peer.session_id}")).json()

            yield peer, relay_stats
        finally:
            await peer.close()
