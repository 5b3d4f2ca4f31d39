"""OutputFanout: one session's output tracks, read once, sent to every peer that plays them.

The owner's page and each viewer of its session subscribe here: one reader per source
track pulls every frame once, at its release time (the FrameProcessor's pacing), and hands
that same frame to all subscribers at the same moment. So the cloud stream is received
and re-timed once, every peer is in step with the others, and no sender can take frames
from another (two senders reading one CloudTrack would split its frames between them).
When the relay forwards the cloud's encoded video, the video frames are ``av.Packet``: each
peer's sender packetises them itself (its own RTP timing) and nothing is encoded per peer.

Bounds. Each subscription queues at most ``max_backlog`` frames: behind that it skips the
oldest (encoded video: up to its newest keyframe, since nothing after a skipped frame
decodes before one; with no keyframe queued it keeps the frames, up to
:data:`HARD_BACKLOG` times the bound, and asks the cloud for one). A subscription whose
sender stops reading altogether (a peer gone quiet before it is closed) is detached after
:data:`STALE_AFTER` s, freeing its queue, and re-attached when it reads again. A new or
re-attached subscription to encoded video starts at a keyframe and asks for one. Every
frame skipped either way is counted.

The lazy decoder (:mod:`scope_relay.local.playout.decoder`) is a source too: subscribers
that need pixels (``decoded=True``: MPEG-TS, NDI) read it, and it decodes only while one is
attached. The reader tasks are owned here and end with their source (closing the session's
FrameProcessor ends the source tracks) or with :meth:`OutputFanout.close`.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable
from typing import Any

import av
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

from scope_relay.local.playout.decoder import LazyDecoder
from scope_relay.util.tasks import OwnedTasks

KINDS = ("video", "audio")
#: frames a subscriber may lag behind the source before it skips the oldest: 1 s of 20 ms
#: audio frames (the source catches up in a burst after the event loop was held up: that
#: must not cost audio), 0.5 s of video at 24 fps (a late picture is better skipped)
MAX_BACKLOG = {"audio": 50, "video": 12}
#: encoded video with no keyframe to skip to is kept up to this many times the bound
HARD_BACKLOG = 4
#: a subscriber whose sender has not read for this long is detached (its queue freed)
STALE_AFTER = 1.0


def _is_key(frame: Any) -> bool:
    """Whether a subscriber may start at ``frame`` (every decoded frame; a keyframe)."""
    return not isinstance(frame, av.Packet) or bool(frame.is_keyframe)


class _Source:
    """One source track read by one task, each frame handed to every subscriber."""

    def __init__(self, track: MediaStreamTrack, tasks: OwnedTasks):
        self.track = track
        self._tasks = tasks
        self.subscribers: set[CountedSubscription] = set()
        self.ended = False
        self.released = 0  # frames read from the track and handed on
        self._reading = False

    def start(self) -> None:
        if not self._reading and not self.ended:
            self._reading = True
            self._tasks.spawn(self._read())

    async def _read(self) -> None:
        try:
            while True:
                frame = await self.track.recv()
                self.released += 1
                for sub in list(self.subscribers):
                    sub.push(frame)
        except MediaStreamError:
            pass
        finally:
            self.ended = True
            for sub in list(self.subscribers):
                sub.end()

    def request_keyframe(self, source: str) -> None:
        ask = getattr(self.track, "request_keyframe", None)
        if ask is not None:
            ask(source)


class CountedSubscription(MediaStreamTrack):
    """One peer's view of a source track, bounded, counting the frames it skipped."""

    def __init__(self, source: _Source, *, max_backlog: int, name: str = "viewer",
                 clock: Callable[[], float] = time.monotonic):
        super().__init__()
        self.kind = source.track.kind
        self._source = source
        self.max_backlog = max_backlog
        #: who asks for keyframes through this subscription (the stats say)
        self.name = name
        self._clock = clock
        self._queue: collections.deque[Any] = collections.deque()
        self._event = asyncio.Event()
        self._attached = False
        self._detached_at: int | None = None  # the source's count when it was detached
        self._needs_key = True  # encoded video: start at a keyframe
        self._ended = False
        self._reading = False
        self.last_read = clock()
        self.frames = 0
        self.skipped = 0
        #: encoded frames not taken while waiting for a keyframe (joining, after a skip)
        self.waited_for_keyframe = 0

    @property
    def backlog(self) -> int:
        """Frames handed to this subscriber and not yet read."""
        return len(self._queue)

    def request_keyframe(self, source: str | None = None) -> None:
        """This subscriber's peer needs a keyframe (its receiver sent a PLI or FIR)."""
        self._source.request_keyframe(source or self.name)

    # --- the source's side ---------------------------------------------------------------
    def push(self, frame: Any) -> None:
        if self._needs_key:
            if not _is_key(frame):
                self.waited_for_keyframe += 1
                return
            self._needs_key = False
        queue = self._queue
        queue.append(frame)
        if len(queue) > self.max_backlog:
            self._skip_backlog()
        self._event.set()

    def _skip_backlog(self) -> None:
        """Too far behind: drop the oldest frames, encoded ones up to the newest keyframe."""
        queue = self._queue
        if not isinstance(queue[-1], av.Packet):
            drop = len(queue) - self.max_backlog
        else:
            keys = [i for i, frame in enumerate(queue) if i > 0 and _is_key(frame)]
            drop = keys[-1] if keys else 0
            if not drop:
                self.request_keyframe(self.name)
                if len(queue) <= HARD_BACKLOG * self.max_backlog:
                    return  # kept: late, but decodable
                drop = len(queue)  # far too far behind: start again at the next keyframe
                self._needs_key = True
        for _ in range(drop):
            queue.popleft()
            self.skipped += 1

    def end(self) -> None:
        self._ended = True
        self._event.set()

    # --- the peer's side -----------------------------------------------------------------
    async def recv(self) -> Any:
        if self.readyState != "live":
            raise MediaStreamError
        if not self._attached:  # (re)attach: from the next frame the source releases
            if self._detached_at is not None:  # released while it was detached: missed
                self.skipped += self._source.released - self._detached_at
                self._detached_at = None
            self._attached = True
            self._needs_key = True
            self._source.subscribers.add(self)
            self._source.start()
            if self.kind == "video":
                self.request_keyframe(self.name)  # (decoded video: nothing is asked)
        self._reading = True
        try:
            while not self._queue:
                if self._ended or self._source.ended or self.readyState != "live":
                    raise MediaStreamError
                self._event.clear()
                await self._event.wait()
        finally:
            self._reading = False
            self.last_read = self._clock()
        self.frames += 1
        return self._queue.popleft()

    def detach_if_stale(self) -> None:
        """Free the queue of a subscriber whose sender stopped reading; what it missed is
        counted now, and what is released until it reads again."""
        if not self._attached or self._reading or self._clock() - self.last_read < STALE_AFTER:
            return
        self._detach(count=True)

    def _detach(self, *, count: bool) -> None:
        if self._attached:
            if count:
                self.skipped += len(self._queue)
            self._queue.clear()
            self._attached = False
            self._detached_at = self._source.released if count else None
            self._source.subscribers.discard(self)

    def stop(self) -> None:
        super().stop()
        self._detach(count=False)  # the peer is leaving: what it had not read is moot
        self._event.set()


class OutputFanout:
    """Subscriptions to a session's output tracks (either may be absent, by the chain's
    flags), and the lazy decoder for the subscribers that need pixels."""

    def __init__(self, video: MediaStreamTrack | None, audio: MediaStreamTrack | None):
        self._tasks = OwnedTasks()
        self._sources: dict[str, _Source | None] = {
            "video": None if video is None else _Source(video, self._tasks),
            "audio": None if audio is None else _Source(audio, self._tasks)}
        self._live: set[CountedSubscription] = set()
        #: frames skipped by subscriptions that have ended, per kind
        self._skipped_gone = dict.fromkeys(KINDS, 0)
        #: the codec forwarded to the page (lower case), when the video goes on encoded
        self.forwarded_codec: str | None = None
        self.decoder: LazyDecoder | None = None
        if video is not None:
            self.decoder = LazyDecoder(
                lambda: self._one("video", name="decoder"), self._end_decoder_subscription,
                lambda: getattr(video, "mime", None))
        self._tasks.spawn(self._sweep())

    def _one(self, kind: str, *, name: str, decoded: bool = False) -> CountedSubscription:
        source: Any = self.decoder if decoded else self._sources[kind]
        sub = CountedSubscription(source, max_backlog=MAX_BACKLOG[kind], name=name)
        self._live.add(sub)
        return sub

    def subscribe(self, *, video: bool = True, audio: bool = True, decoded: bool = False,
                  name: str = "viewer"
                  ) -> tuple[CountedSubscription | None, CountedSubscription | None]:
        """A (video, audio) pair for one peer: ``None`` for a kind the session has not, or
        the peer does not want. ``decoded``: video as pixels (the lazy decoder), for an
        output that needs frames; otherwise what the source releases (forwarded: encoded).
        ``name`` says who asks for keyframes through it."""
        def one(kind: str, wanted: bool) -> CountedSubscription | None:
            if self._sources[kind] is None or not wanted:
                return None
            return self._one(kind, name=name, decoded=decoded and kind == "video")
        return one("video", video), one("audio", audio)

    def can_forward_to(self, codecs: list[str]) -> bool:
        """Whether a peer whose sender negotiated ``codecs`` (first: what it sends) can
        take the forwarded packets (True too when nothing is forwarded: it gets pixels)."""
        if self.forwarded_codec is None:
            return True
        return bool(codecs) and codecs[0].lower() == self.forwarded_codec

    def _end_decoder_subscription(self, sub: Any) -> None:  # (the one it subscribed)
        self.unsubscribe(sub)

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
            for sub in list(self._live):
                sub.detach_if_stale()

    @property
    def subscribers(self) -> int:
        """Live subscriptions (a peer has one per kind; the running decoder one)."""
        return len(self._live)

    def stats(self) -> dict[str, Any]:
        skipped = dict(self._skipped_gone)
        for sub in self._live:
            skipped[sub.kind] += sub.skipped
        out: dict[str, Any] = {f"fanout_skipped_{kind}_frames": skipped[kind] for kind in KINDS}
        if self.decoder is not None:
            out["relay_decoder"] = self.decoder.stats()
        return out

    async def close(self) -> None:
        """Stop every subscription, the decoder and the readers (the session's end)."""
        if self.decoder is not None:
            await self.decoder.close()
        self.unsubscribe(*list(self._live))
        await self._tasks.cancel_all()
