"""``stream_pipeline``: the cloud app, the relay and a receiver on 127.0.0.1, in-process."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
from aiortc import MediaStreamTrack

from scope_relay.cloud import CloudConfig, create_app
from scope_relay.cloud.app import STATE_KEY
from scope_relay.cloud.pipelines import Pipeline
from scope_relay.local import CloudTarget, RelayConfig, create_relay_app
from scope_relay.protocol.capabilities import Capabilities
from scope_relay.rtc.ice import ENV_LOOPBACK
from scope_relay.util.serve import Served, serve

from .camera import SyntheticCamera
from .receiver import Receiver

#: a test closes its receiver first; handlers still running after this are cut off
SHUTDOWN_TIMEOUT = 1.0


@dataclass
class StreamSession:
    """A pipeline chain streaming cloud -> relay -> :attr:`receiver`."""

    cloud: Served
    relay: Served
    receiver: Receiver
    capabilities: Capabilities
    camera: MediaStreamTrack | None

    @property
    def session_id(self) -> str | None:
        return self.receiver.session_id

    @property
    def failure(self) -> str | None:
        """The cloud's reason once the pipeline failed mid-stream, else ``None``."""
        return self.receiver.failure

    @property
    def audio(self) -> np.ndarray:
        """Audio kept so far: int16 ``(2, n)``, 48 kHz stereo."""
        return self.receiver.audio

    @property
    def video(self) -> list[np.ndarray]:
        """Video frames kept so far: RGB ``(H, W, 3)`` uint8."""
        return self.receiver.video

    async def wait_audio(self, seconds: float, timeout: float = 20.0) -> np.ndarray:
        """The next ``seconds`` of audio (int16 ``(2, n)``, 48 kHz)."""
        return await self.receiver.wait_audio(seconds, timeout)

    async def wait_video(self, frames: int, timeout: float = 20.0) -> list[np.ndarray]:
        """The next ``frames`` video frames (RGB ``(H, W, 3)`` uint8)."""
        return await self.receiver.wait_video(frames, timeout)

    async def audio_until(self, check: Callable[[np.ndarray], bool], seconds: float = 0.5,
                          timeout: float = 10.0) -> np.ndarray:
        """Read audio ``seconds`` at a time until ``check(window)`` is true and return that
        window; ``TimeoutError`` after ``timeout`` s. For changes that take a moment to come
        through (a live parameter passes the cloud's and the relay's buffers)."""
        return await _until(lambda left: self.wait_audio(seconds, left), check, timeout,
                            "audio")

    async def video_until(self, check: Callable[[list[np.ndarray]], bool], frames: int = 5,
                          timeout: float = 10.0) -> list[np.ndarray]:
        """Read video ``frames`` at a time until ``check(frames)`` is true; see
        :meth:`audio_until`."""
        return await _until(lambda left: self.wait_video(frames, left), check, timeout,
                            "video")

    async def send_parameters(self, updates: Mapping[str, Any]) -> None:
        """Live parameter updates, as the page sends them (applied at the next chunk)."""
        await self.receiver.send_parameters(updates)

    async def set_tempo(self, **fields: Any) -> dict[str, Any]:
        """Drive the relay's tempo as the page does (``PUT /api/v1/tempo``): e.g.
        ``set_tempo(source="manual", bpm=128, quantize="bar")``; the pipeline then sees
        the beat in ``inputs.tempo``. Returns the relay's tempo state (docs/tempo.md)."""
        async with httpx.AsyncClient(base_url=self.relay.url, timeout=30) as http:
            reply = await http.put("/api/v1/tempo", json=fields)
        if reply.status_code != 200:
            raise ValueError(f"the relay refused the tempo: {reply.text}")
        return dict(reply.json())


async def _until(read: Callable[[float], Any], check: Callable[[Any], bool], timeout: float,
                 what: str) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while (left := deadline - loop.time()) > 0:
        try:
            window = await read(left)
        except TimeoutError:
            break
        if check(window):
            return window
    raise TimeoutError(f"the {what} did not pass the check within {timeout:g} s")


def _register(app: Any, pipelines: Iterable[type[Pipeline]]) -> None:
    """Add ``pipelines`` to the cloud app's registry; one it already has (found by plugin
    discovery, say) is left as it is when it is the same class."""
    registry = app[STATE_KEY].registry
    for cls in pipelines:
        if cls.pipeline_id in registry.ids():
            if registry.get(cls.pipeline_id) is not cls:
                raise ValueError(f"pipeline id {cls.pipeline_id!r} is already taken by "
                                 f"{registry.get(cls.pipeline_id).__qualname__}")
            continue
        registry.register(cls)


@contextlib.asynccontextmanager
async def stream_pipeline(pipeline_ids: str | Sequence[str], *,
                          pipelines: Iterable[type[Pipeline]] = (),
                          parameters: Mapping[str, Any] | None = None,
                          camera: MediaStreamTrack | bool = True,
                          device: str | None = None,
                          timeout: float = 60.0) -> AsyncIterator[StreamSession]:
    """Stream the chain ``pipeline_ids`` to a receiver until the block ends.

    ``pipelines``: classes to register with the cloud app besides those it discovers itself
    (installed plugins' entry points, ``SCOPE_RELAY_PIPELINES``); one it found already is
    used as it is.
    ``parameters``: initial parameters (as the page's ``initialParameters``).
    ``camera``: for a chain that accepts video, the track to send (``True``: a
    :class:`SyntheticCamera` showing colour bars; ``False``: none). ``device``: where the
    cloud runs pipelines (``cpu``, ``cuda``, ...; default: CUDA when there is one). The
    offer, answered once the chain is loaded and the cloud has answered, may take up to
    ``timeout`` seconds.

    Every hop gathers only 127.0.0.1 candidates (``SCOPE_RELAY_ICE_LOOPBACK=1`` is set
    for this process unless already set).
    """
    os.environ.setdefault(ENV_LOOPBACK, "1")
    ids = [pipeline_ids] if isinstance(pipeline_ids, str) else list(pipeline_ids)
    config = CloudConfig(loopback_ice=True)
    if device is not None:
        config.device = device
    cloud_app = create_app(config)
    async with contextlib.AsyncExitStack() as stack:
        cloud = await stack.enter_async_context(
            serve(cloud_app, shutdown_timeout=SHUTDOWN_TIMEOUT))
        _register(cloud_app, pipelines)  # after startup, so discovered plugins are in
        capabilities = cloud_app[STATE_KEY].registry.capabilities(ids)
        track: MediaStreamTrack | None = None
        if capabilities.accepts_video and camera is not False:
            track = SyntheticCamera() if camera is True else camera
            if camera is True:
                stack.callback(track.stop)
        relay = await stack.enter_async_context(serve(
            create_relay_app(RelayConfig(CloudTarget(cloud.ws_url), loopback_ice=True)),
            shutdown_timeout=SHUTDOWN_TIMEOUT))
        receiver = Receiver(capabilities, camera=track)
        stack.push_async_callback(receiver.close)
        await receiver.connect(relay.url, {**(parameters or {}), "pipeline_ids": ids}, timeout)
        yield StreamSession(cloud, relay, receiver, capabilities, track)
