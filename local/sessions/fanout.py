"""OutputFanout: one session's output tracks, read once, sent to every peer that plays them.

The owner's page and each viewer of its session subscribe through aiortc's maintained
``MediaRelay``: one reader per source track pulls every frame once, at its release time
(the FrameProcessor's pacing), and hands that same frame to all subscribers at the same
moment. So the cloud stream is decoded and re-timed once, every peer is in step with the
others, and no sender can take frames from another (two senders reading one CloudTrack
would split its frames between them). Each peer still encodes on its own (its own
encoder, keyframes and RTP timing): that is the cost of an extra viewer.

Bounds. MediaRelay's buffered subscriptions queue without limit, and its unbuffered ones
keep only the newest frame (a sender whose encoder thread comes back late, as on a busy
machine, would then lose audio that was merely late). So subscriptions are buffered, and
bounded here: a subscriber more than ``max_backlog`` frames behind skips the oldest, and
one whose sender stops reading altogether (a peer gone quiet before it is closed) is
detached after :data:`STALE_AFTER` s, freeing its queue, and re-attached at the newest
frame if it reads again. Every frame skipped either way is counted, from the source's own
count of frames released (``frames_sent``).

MediaRelay's reader tasks end with their source: closing the session's FrameProcessor
ends the source tracks, which ends the readers and every subscription.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from aiortc import MediaStreamTrack
from aiortc.contrib.media import MediaRelay
from aiortc.mediastreams import MediaStreamError

from scope_relay.util.tasks import OwnedTasks

KINDS = ("video", "audio")
#: frames a subscriber may lag behind the source before it skips the oldest: 1 s of 20 ms
#: audio frames (the source catches up in a burst after the event loop was held up: that
#: must not cost audio), 0.5 s of video at 24 fps (a late picture is better skipped)
MAX_BACKLOG = {"audio": 50, "video": 12}
#: a subscriber whose sender has not read for this long is detached (its queue freed)
STALE_AFTER = 1.0


class CountedSubscription(MediaStreamTrack):
    """One peer's view of a source track, bounded, counting the frames it skipped."""

    def __init__(self, relay: MediaRelay, source: MediaStreamTrack, *, max_backlog: int,
                 clock: Callable[[], float] = time.monotonic):
        super().__init__()
        self.kind = source.kind
        self._relay = relay
        self._source = source
        self.max_backlog = max_backlog
        self._clock = clock
        self._proxy: MediaStreamTrack | None = None
        self._attached_at = 0  # the source's count when the current proxy started
        self._taken = 0  # frames taken from the current proxy
        self._reading = False
        self.last_read = clock()
        self.frames = 0
        self.skipped = 0

    def _released(self) -> int:
        return int(getattr(self._source, "frames_sent", 0))

    @property
    def backlog(self) -> int:
        """Frames released to this subscriber and not yet read."""
        if self._proxy is None:
            return 0
        return max(0, self._released() - self._attached_at - self._taken)

    async def recv(self) -> Any:
        if self.readyState != "live":
            raise MediaStreamError
        if self._proxy is None:  # (re)attach: from the next frame the source releases
            self._proxy = self._relay.subscribe(self._source, buffered=True)
            self._attached_at, self._taken = self._released(), 0
        proxy = self._proxy
        self._reading = True
        try:
            while self.backlog > self.max_backlog:  # too far behind: skip the oldest
                await proxy.recv()
                self._taken += 1
                self.skipped += 1
            frame = await proxy.recv()  # MediaStreamError once the source has ended
        finally:
            self._reading = False
            self.last_read = self._clock()
        self._taken += 1
        self.frames += 1
        return frame

    def detach_if_stale(self) -> None:
        """Free the queue of a subscriber whose sender stopped reading; what it missed is
        counted when it reads again (or now, if it never does)."""
        if self._proxy is None or self._reading or self._clock() - self.last_read < STALE_AFTER:
            return
        self._detach(count=True)

    def _detach(self, *, count: bool) -> None:
        if self._proxy is not None:
            if count:
                self.skipped += self.backlog
            self._proxy.stop()  # unregisters from the relay, its queue goes with it
            self._proxy = None
            # frames released from here until it re-attaches are skipped too
            self._attached_at, self._taken = self._released(), 0

    def stop(self) -> None:
        super().stop()
        self._detach(count=False)  # the peer is leaving: what it had not read is moot


class OutputFanout:
    """Subscriptions to a session's output tracks (either may be absent, by the chain's flags)."""

    def __init__(self, video: MediaStreamTrack | None, audio: MediaStreamTrack | None):
        self._relay = MediaRelay()
        self._sources: dict[str, MediaStreamTrack | None] = {"video": video, "audio": audio}
        self._live: set[CountedSubscription] = set()
        #: frames skipped by subscriptions that have ended, per kind
        self._skipped_gone = dict.fromkeys(KINDS, 0)
        self._tasks = OwnedTasks()
        self._tasks.spawn(self._sweep())

    def subscribe(self, *, video: bool = True, audio: bool = True
                  ) -> tuple[CountedSubscription | None, CountedSubscription | None]:
        """A (video, audio) pair for one peer: ``None`` for a kind the session has not, or
        the peer does not want."""
        def one(kind: str, wanted: bool) -> CountedSubscription | None:
            source = self._sources[kind]
            if source is None or not wanted:
                return None
            sub = CountedSubscription(self._relay, source, max_backlog=MAX_BACKLOG[kind])
            self._live.add(sub)
            return sub
        return one("video", video), one("audio", audio)

    def unsubscribe(self, *tracks: CountedSubscription | None) -> None:
        """Stop a peer's subscriptions (idempotent); their skip counts are kept."""
        for track in tracks:
            if track is None or track not in self._live:
                continue
            self._live.discard(track)
            track.stop()
            self._skipped_gone[track.kind] += track.skipped

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(STALE_AFTER / 2)
            for sub in self._live:
                sub.detach_if_stale()

    @property
    def subscribers(self) -> int:
        """Live subscriptions (a peer has one per kind)."""
        return len(self._live)

    def stats(self) -> dict[str, int]:
        skipped = dict(self._skipped_gone)
        for sub in self._live:
            skipped[sub.kind] += sub.skipped
        return {f"fanout_skipped_{kind}_frames": skipped[kind] for kind in KINDS}

    async def close(self) -> None:
        """Stop every subscription and the sweeper (the session's end)."""
        self.unsubscribe(*list(self._live))
        await self._tasks.cancel_all()
