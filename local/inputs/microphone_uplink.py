"""The browser's microphone on its way up to the cloud: bounded, continuous, and outliving
cloud hops (the audio counterpart of camera.py).

Audio differs from the camera in one way that matters: a gap is heard. So the forwarder
drops whole 20 ms frames only when its small queue is full (the sender stalled), counts
them, and renumbers what it sends so the stream going up stays continuous: the cloud sees
one gapless microphone, never a timestamp jump. A new cloud connection starts from the
newest frame, not from audio that waited while the hop was down (that would be latency
for the rest of the session).
"""

from __future__ import annotations

import asyncio
import collections
from fractions import Fraction
from typing import cast

import av
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

from scope_relay.util.tasks import OwnedTasks

#: frames (20 ms each) held for a sender that is not keeping up; beyond this the oldest go
MAX_MICROPHONE_FRAMES = 5


class AudioForwarder:
    """Pumps a remote audio track into a bounded queue (drops the oldest, counted), so
    aiortc's unbounded receive queue never grows, whoever reads it and whenever."""

    def __init__(self, source: MediaStreamTrack, max_frames: int = MAX_MICROPHONE_FRAMES):
        self.source = source
        self._frames: collections.deque[av.AudioFrame] = collections.deque()
        self._max = max_frames
        self._event = asyncio.Event()
        self._ended = False
        self._next_pts = 0  # continuous numbering of what goes out (samples)
        self.dropped = 0
        self.dropped_samples = 0
        self.forwarded = 0
        self._tasks = OwnedTasks()
        self._pump_task = self._tasks.spawn(self._pump())

    async def _pump(self) -> None:
        source = self.source
        try:
            while True:
                frame = cast(av.AudioFrame, await source.recv())
                if len(self._frames) >= self._max:
                    self._drop(1)
                self._frames.append(frame)
                self._event.set()
        except MediaStreamError:
            pass
        finally:
            if self.source is source:  # (not when another source took over)
                self._ended = True
                self._event.set()

    def replace_source(self, source: MediaStreamTrack) -> MediaStreamTrack:
        """Forward ``source`` from now on (a WHIP sender instead of the browser's
        microphone, and back: local/outputs/whip.py); returns the source it replaces, which
        nobody reads any more. The stream going up stays continuous (renumbered)."""
        old, self.source = self.source, source
        self._pump_task.cancel()
        self._ended = False
        self._pump_task = self._tasks.spawn(self._pump())
        return old

    def _drop(self, count: int) -> None:
        for _ in range(count):
            old = self._frames.popleft()
            self.dropped += 1
            self.dropped_samples += old.samples

    def resync(self) -> None:
        """A new reader starts now: keep only the newest frame (the rest counted)."""
        self._drop(max(0, len(self._frames) - 1))

    async def next_frame(self) -> av.AudioFrame:
        """The oldest queued frame, renumbered to follow the previous one sent."""
        while not self._frames:
            if self._ended:
                raise MediaStreamError
            self._event.clear()
            await self._event.wait()
        frame = self._frames.popleft()
        frame.pts = self._next_pts
        frame.time_base = Fraction(1, frame.sample_rate)
        self._next_pts += frame.samples
        self.forwarded += 1
        return frame

    async def close(self) -> None:
        await self._tasks.cancel_all()


class MicrophoneFeed(MediaStreamTrack):
    """One cloud connection's view of the session's microphone. aiortc stops a sender's
    track when its connection closes; stopping this view leaves the forwarder running for
    the connection that replaces it."""

    kind = "audio"

    def __init__(self, forwarder: AudioForwarder):
        super().__init__()
        self.forwarder = forwarder
        forwarder.resync()

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        return await self.forwarder.next_frame()
