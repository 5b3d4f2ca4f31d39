"""The browser's camera on its way up to the cloud: bounded, and outliving cloud hops.

Where the cloud hop sends video in the codec the camera arrives in, the camera is not
decoded at the relay: the camera's receive path (rtc/receive_path.py) hands each whole
encoded frame to :meth:`LatestFrameTrack.encoded_sink`, the pump queues it as an
``av.Packet`` and the cloud hop's sender ``pack``s it as it is. Otherwise aiortc decodes
the camera and the pump carries decoded frames, which the cloud hop's sender encodes again.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable, Callable
from typing import Any

import av
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError
from av.frame import Frame

from scope_relay.protocol.media import VIDEO_TIME_BASE
from scope_relay.rtc.aiortc_internals import force_keyframe
from scope_relay.rtc.keyframe_requests import UpstreamKeyframes
from scope_relay.rtc.receive_path import EncodedVideo

Item = Frame | av.Packet


class LatestFrameTrack(MediaStreamTrack):
    """Forwards a remote video track keeping at most a few frames, so a slow encoder never
    lets aiortc's unbounded receive queue grow. Decoded frames: the oldest is dropped.
    Encoded frames (forwarding): a dropped frame takes every frame up to the next keyframe
    with it (they depend on it), and where none is queued the source is asked for one; all
    drops counted. One timeline across replaced sources (:meth:`replace_source`)."""

    kind = "video"

    def __init__(self, source: MediaStreamTrack, max_frames: int = 2):
        super().__init__()
        self.source = source
        self.max_frames = max_frames
        self._frames: collections.deque[Item] = collections.deque()
        self._event = asyncio.Event()
        self.dropped = 0
        self.forwarded_frames = 0  # encoded frames queued (not decoded at the relay)
        self.forwarded_bytes = 0
        self.decoded_frames = 0  # decoded frames queued (encoded again by the cloud hop)
        #: keyframe requests from the cloud (PLI/FIR) for forwarded frames
        self.cloud_requests = 0
        #: who sends each source's encoded frames, to ask them for a keyframe (the first
        #: source's kept; a replacing one's forgotten once it is replaced in turn)
        self._first = source
        self._askers: dict[
            MediaStreamTrack, tuple[Callable[[], Awaitable[bool]], Callable[[], float]]] = {}
        #: keyframe requests to whoever sends the camera now, coalesced
        self.keyframes = UpstreamKeyframes(self._ask_source, self._source_rtt)
        self._need_keyframe = True  # encoded frames start at a keyframe
        self.forwarding = False  # whether the last frame queued was still encoded
        #: the timeline across replaced sources (see :meth:`_continue_timeline`)
        self._rebase = False
        self._shift = 0
        self._last_pts: int | None = None
        self._step = 3000  # one frame at 30 fps in RTP's 90 kHz, until two frames say
        self._task = asyncio.get_running_loop().create_task(self._pump())

    # --- intake --------------------------------------------------------------------------
    async def _pump(self) -> None:
        try:
            while True:
                frame = await self.source.recv()
                if isinstance(frame, Frame):
                    self._continue_timeline(frame)
                    self.decoded_frames += 1
                    self.forwarding = False
                self._push(frame)
        except MediaStreamError:
            self._event.set()

    def encoded_sink(self, source: MediaStreamTrack, ask: Callable[[], Awaitable[bool]],
                     rtt: Callable[[], float]) -> Callable[[EncodedVideo], None]:
        """Where ``source``'s receive path hands its encoded frames (``ReceivePath.
        forward_video``); ``ask`` sends its sender a PLI, ``rtt`` is that hop's round trip.
        Frames are taken only while ``source`` is the pump's source."""
        self._askers[source] = (ask, rtt)

        def sink(encoded: EncodedVideo) -> None:
            if self.source is source:
                self._take_encoded(encoded)
        return sink

    def _take_encoded(self, encoded: EncodedVideo) -> None:
        self.keyframes.frame(encoded.keyframe)
        if self._need_keyframe and not encoded.keyframe:
            self.dropped += 1  # undecodable without the frames before it
            self.keyframes.request("keyframe wait")
            return
        self._need_keyframe = False
        packet = av.Packet(encoded.data)
        packet.pts = encoded.pts
        packet.time_base = VIDEO_TIME_BASE
        packet.is_keyframe = encoded.keyframe
        self._continue_timeline(packet)
        self.forwarded_frames += 1
        self.forwarded_bytes += len(encoded.data)
        self.forwarding = True
        self._push(packet)

    def _push(self, item: Item) -> None:
        self._frames.append(item)
        if len(self._frames) > self.max_frames:
            self._shed()
        self._event.set()

    def _shed(self) -> None:
        """Drop the oldest; an encoded one takes the encoded frames after it up to the next
        keyframe (or decoded frame) with it, and with none queued the next encoded frame
        must be a keyframe: the sender is asked for one."""
        first = self._frames.popleft()
        self.dropped += 1
        if not isinstance(first, av.Packet):
            return
        frames = self._frames
        while frames and isinstance(frames[0], av.Packet) and not frames[0].is_keyframe:
            frames.popleft()
            self.dropped += 1
        if not frames:
            self._need_keyframe = True
            self.keyframes.request("queue full")

    # --- keyframes -----------------------------------------------------------------------
    def request_keyframe(self) -> None:
        """The cloud asked for a keyframe (PLI/FIR): for forwarded frames only the camera's
        sender can make one (decoded frames: the cloud hop's encoder does, aiortc's way)."""
        if self.forwarding:
            self.cloud_requests += 1
            self.keyframes.request("cloud")

    async def _ask_source(self) -> bool:
        asker = self._askers.get(self.source)
        return False if asker is None else await asker[0]()

    def _source_rtt(self) -> float:
        asker = self._askers.get(self.source)
        return 0.0 if asker is None else asker[1]()

    # --- sources -------------------------------------------------------------------------
    def replace_source(self, source: MediaStreamTrack) -> MediaStreamTrack:
        """Pump ``source`` from now on (a WHIP sender instead of the browser's camera, and
        back: local/outputs/whip.py); returns the source it replaces, which nobody reads
        any more. Readers see one uninterrupted track; a new source's encoded frames start
        at a keyframe (it is asked for one)."""
        old, self.source = self.source, source
        if old is not self._first:
            self._askers.pop(old, None)  # (a WHIP sender does not come back)
        self._rebase = True  # its clock is not the old source's: continue ours
        self._need_keyframe = True
        self._task.cancel()
        self._task = asyncio.get_running_loop().create_task(self._pump())
        self.keyframes.sender_changed()
        if source in self._askers:
            self.keyframes.request("new source")
        return old

    def _continue_timeline(self, frame: Frame | av.Packet) -> None:
        """Keep the timestamps one timeline across :meth:`replace_source`: the first frame
        of a new source follows the last frame of the old one by one frame interval, and
        its successors keep their own spacing. (The cloud places camera frames on its media
        clock by their timestamps from the first one on; a jump would hold or skip them.)"""
        if frame.pts is None:
            return
        if self._rebase and self._last_pts is not None:
            self._shift = self._last_pts + self._step - frame.pts
            self._rebase = False
        frame.pts += self._shift
        if self._last_pts is not None and 0 < frame.pts - self._last_pts:
            self._step = frame.pts - self._last_pts
        self._last_pts = frame.pts

    # --- output --------------------------------------------------------------------------
    async def recv(self) -> Item:
        while not self._frames:
            if self._task.done():
                self.stop()
                raise MediaStreamError
            self._event.clear()
            await self._event.wait()
        return self._frames.popleft()

    def stop(self) -> None:
        super().stop()
        self._task.cancel()
        self.keyframes.close()

    def stats(self) -> dict[str, Any]:
        """The camera's way up: forwarded or decoded, drops, keyframe requests."""
        keyframes = self.keyframes.stats()
        return {"forwarding": self.forwarding,
                "forwarded_frames": self.forwarded_frames,
                "forwarded_bytes": self.forwarded_bytes,
                "decoded_frames": self.decoded_frames,
                "dropped": self.dropped,
                "keyframe_requests_from_cloud": self.cloud_requests,
                "keyframe_requests_sent": keyframes["sent"],
                "keyframe_requests_coalesced": keyframes["coalesced"],
                "keyframes_answered": keyframes["answered"]}


class CameraFeed(MediaStreamTrack):
    """One cloud connection's view of the session's camera pump. aiortc stops a sender's
    track when the connection closes; stopping this view leaves the pump running for the
    connection that replaces it. A new connection's first encoded frame is a keyframe (the
    cloud's decoder has nothing before it), and where the pump turns from encoded frames to
    decoded ones the sender's encoder starts with a keyframe too (its references are not
    what the cloud decoded last)."""

    kind = "video"

    def __init__(self, pump: LatestFrameTrack):
        super().__init__()
        self.pump = pump
        #: the cloud hop's sender of this feed (set once added: its encoder is told)
        self.sender: Any = None
        self._last_encoded: bool | None = None

    async def recv(self) -> Item:
        while True:
            item = await self.pump.recv()
            encoded = isinstance(item, av.Packet)
            if isinstance(item, av.Packet) and not item.is_keyframe and not self._last_encoded:
                self.pump.dropped += 1  # (a first frame, or after decoded ones)
                self.pump.keyframes.request("cloud connection")
                continue
            if not encoded and self._last_encoded and self.sender is not None:
                force_keyframe(self.sender)
            self._last_encoded = encoded
            return item
