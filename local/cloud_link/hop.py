"""CloudHop: one browser session's media hop to the cloud, kept up across failures.

aiortc has no ICE restart, so when the hop fails a new CloudWebRTCClient (a new peer
connection and a new cloud session) is built to feed the same FrameProcessor; the
browser's hop stays up meanwhile (audio plays silence, video holds) and playback resumes
on the cloud's clock. Every parameter the browser set is remembered and restored on the
new hop; the chain stays the one this session negotiated.

A pipeline that fails is the one thing a new hop cannot cure (the same model would fail
the same way, and a reconnect loop would hide it): the hop is then failed for good, its
cloud peer closed (freeing the cloud's session), and ``on_pipeline_failed`` is told.

Every cloud session the hop gives up (a hop rebuilt, a new hop that failed half-way, the
hop closed with its browser session) is ended by name over the control socket
(``close_session``) as well as by closing its peer connection: on the lossy path that
made the hop fail, the DTLS close can be lost, and the cloud would then keep sending into
the same bottleneck until ICE consent fails (~30 s).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

from scope_relay.local.cloud_link.peer import CloudWebRTCClient
from scope_relay.protocol.errors import PipelineFailed
from scope_relay.protocol.parameters import CHAIN_KEYS, PIPELINE_IDS, is_paused
from scope_relay.util.tasks import OwnedTasks

logger = logging.getLogger(__name__)

#: parameters remembered for a reconnect; beyond this the oldest key is forgotten
MAX_PARAMETER_KEYS = 256
#: no media packet for this long on a hop that should be playing: rebuild it at once
#: (ICE consent would take ~30 s to notice a cloud that died or lost our session)
MEDIA_WATCHDOG = 2.0
WATCHDOG_INTERVAL = 0.5


class CloudHop:
    def __init__(self, new_client: Callable[[], CloudWebRTCClient], *, pipeline_ids: list[str],
                 initial_parameters: Mapping[str, Any], name: str = "session"):
        #: builds an unconnected client for a new hop (each feeds the same FrameProcessor)
        self._new_client = new_client
        self.name = name
        self.client: CloudWebRTCClient | None = None
        #: every parameter update forwarded so far, merged: a new hop starts from them,
        #: not from the offer's initial values
        self.parameter_state: dict[str, Any] = {}
        self.reconnects = 0
        self.parameters_forgotten = 0
        #: hops rebuilt because media stopped while the session should have been playing
        self.media_timeouts = 0
        self._initial = {**initial_parameters, PIPELINE_IDS: list(pipeline_ids)}
        self._tasks = OwnedTasks()
        self._keeper: asyncio.Task | None = None
        #: the cloud's reason once its pipeline failed; the hop is then down for good
        self.pipeline_failed: str | None = None
        #: called once with :attr:`pipeline_failed` (on the event loop)
        self.on_pipeline_failed: Callable[[str], object] | None = None
        #: called with each notice the cloud sends on the current hop's channel
        self.on_notice: Callable[[dict[str, Any]], object] | None = None

    def _build_client(self) -> CloudWebRTCClient:
        client = self._new_client()
        client.on_pipeline_failed = self._pipeline_failed
        client.on_notice = self._notice
        return client

    def _notice(self, notice: dict[str, Any]) -> None:
        if self.on_notice is not None:
            self.on_notice(notice)

    async def _give_up(self, client: CloudWebRTCClient) -> None:
        """Close ``client`` and have the cloud end its session (asked first, not awaited)."""
        if client.session_id is not None and not client.closed.is_set():
            client.connection.release_session(client.session_id)
        await client.close()

    async def connect(self) -> None:
        """Negotiate the first hop and return once the cloud has answered, then bring it
        up and keep it up in the background. Raises what the cloud refused, or
        ``PIPELINE_FAILED`` if the pipeline failed before that.

        Returning before ICE and DTLS are done lets the relay answer its browser at once,
        so the two hops connect side by side rather than one after the other (about
        100 ms off every start-up). A first hop that then fails to connect is rebuilt
        like any later one; a pipeline that fails on its first frame reaches the page as
        ``PIPELINE_FAILED`` on the data channel."""
        self.client = self._build_client()
        try:
            await self.client.negotiate(self._initial)
        except BaseException:
            await self._give_up(self.client)
            if self.pipeline_failed is not None:  # the real reason the hop went down
                raise PipelineFailed(self.pipeline_failed) from None
            raise
        if self.pipeline_failed is not None:
            raise PipelineFailed(self.pipeline_failed)
        self._keeper = self._tasks.spawn(self._keep_connected(self.client))
        self._tasks.spawn(self._watch_media())

    async def _finish_first_hop(self, client: CloudWebRTCClient) -> None:
        """Wait for the first hop to connect; on failure mark it failed so it is rebuilt.
        Parameters the browser sent meanwhile found no open channel: send them now."""
        try:
            await client.wait_connected()
        except Exception as exc:
            logger.warning("%s: the cloud hop did not come up: %s", self.name, exc)
            client.failed.set()
            return
        if self.parameter_state and client.counts.parameters_dropped:
            client.send_parameters(json.dumps(self.parameter_state))

    def _pipeline_failed(self, message: str) -> None:
        if self.pipeline_failed is not None:
            return
        self.pipeline_failed = message
        logger.error("%s: the cloud's pipeline failed, not reconnecting: %s", self.name, message)
        if self._keeper is not None:
            self._keeper.cancel()  # (closes a half-built new client, if any)
        if self.client is not None:
            self._tasks.spawn(self._give_up(self.client))  # the cloud session is of no more use
        if self.on_pipeline_failed is not None:
            self.on_pipeline_failed(message)

    def forward(self, raw: str, updates: Mapping[str, Any]) -> None:
        """A browser ``parameters`` message: sent on unchanged (observe, never edit) and
        remembered for the next hop."""
        if self.client is not None:
            self.client.send_parameters(raw)
        self.parameter_state.update((k, v) for k, v in updates.items() if k not in CHAIN_KEYS)
        while len(self.parameter_state) > MAX_PARAMETER_KEYS:  # oldest keys go first
            del self.parameter_state[next(iter(self.parameter_state))]
            self.parameters_forgotten += 1

    async def _keep_connected(self, first: CloudWebRTCClient) -> None:
        await self._finish_first_hop(first)
        backoff = 0.5
        while True:
            assert self.client is not None
            await self.client.failed.wait()
            logger.warning("%s: cloud media connection lost, reconnecting", self.name)
            await self._give_up(self.client)
            while True:
                client = self._build_client()
                restored = dict(self.parameter_state)
                try:
                    await client.connect({**self._initial, **restored})
                except BaseException as exc:
                    await self._give_up(client)
                    if not isinstance(exc, Exception):
                        raise  # cancelled by close(): the half-built client is closed too
                    logger.warning("%s: reconnecting to the cloud failed: %s", self.name, exc)
                    await asyncio.sleep(backoff)
                    backoff = min(2 * backoff, 10.0)
                    continue
                self.client, backoff = client, 0.5
                self.reconnects += 1
                # what the browser changed while we connected went to the old channel
                changed = {k: v for k, v in self.parameter_state.items()
                           if k not in restored or restored[k] != v}
                if changed:
                    client.send_parameters(json.dumps(changed))
                break

    async def _watch_media(self) -> None:
        """Fail the current hop when no packet has come for :data:`MEDIA_WATCHDOG` (twice
        in a row, so a relay that was itself stalled does not blame the cloud)."""
        strikes = 0
        while self.pipeline_failed is None:
            await asyncio.sleep(WATCHDOG_INTERVAL)
            client = self.client
            silence = client.media_silence() if client is not None else None
            if client is None or client.failed.is_set() or self.paused or silence is None \
                    or silence < MEDIA_WATCHDOG:
                strikes = 0
                continue
            strikes += 1
            if strikes >= 2:
                logger.warning("%s: no media from the cloud for %.1f s: rebuilding the hop",
                               self.name, silence)
                self.media_timeouts += 1
                client.failed.set()
                strikes = 0

    @property
    def paused(self) -> bool:
        """The page paused the session (``paused``): silence and a held picture are expected."""
        return is_paused({**self._initial, **self.parameter_state})

    def stats(self) -> dict[str, Any]:
        out = self.client.stats() if self.client is not None else {}
        out["paused"] = self.paused
        out["cloud_reconnects"] = self.reconnects
        out["media_timeouts"] = self.media_timeouts
        out["pipeline_failed"] = self.pipeline_failed
        out["parameters_forgotten"] = self.parameters_forgotten
        return out

    async def close(self) -> None:
        await self._tasks.cancel_all()
        if self.client is not None:
            await self._give_up(self.client)
