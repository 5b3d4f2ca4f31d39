"""Forwarded (still encoded) video is skipped only where it stays decodable, and keyframe
requests go upstream one at a time: the playout queue, a fan-out subscription and the
upstream coalescer, each on its own with real objects (no network)."""

from __future__ import annotations

import asyncio

import av
import pytest
from aiortc import MediaStreamTrack

from scope_relay.local.playout.frame_processor import FrameProcessor
from scope_relay.local.playout.release_tracks import CloudTrack
from scope_relay.local.sessions.fanout import OutputFanout
from scope_relay.rtc.keyframe_requests import UpstreamKeyframes
from scope_relay.rtc.receive_path import EncodedVideo

FRAME = 1 / 30


def encoded(n: int, keyframe: bool) -> EncodedVideo:
    return EncodedVideo(bytes([n % 256]) * 10, n * 3000, keyframe, "video/VP8")


# --- the playout queue ----------------------------------------------------------------------
def processor_at(now: list[float]) -> tuple[FrameProcessor, list[str]]:
    asked: list[str] = []
    p = FrameProcessor(playout_delay=0.0, clock=lambda: now[0])
    p.request_keyframe = asked.append
    return p, asked


async def test_late_encoded_frames_skip_to_the_newest_due_keyframe_only():
    now = [100.0]
    p, asked = processor_at(now)
    keys = {0, 5}
    for n in range(10):
        p.add_video(encoded(n, n in keys), 100.0 + n * FRAME, 100.0 + n * FRAME)
    now[0] = 100.0 + 7.5 * FRAME  # frames 0..7 are due: frame 5 is the newest keyframe
    _, first = await p.next_video()
    assert isinstance(first, EncodedVideo) and first.keyframe and first.pts == 5 * 3000
    assert p.counts.video_late_frames == 5
    _, following = await p.next_video()
    assert following.pts == 6 * 3000  # then in order: no skip past what is decodable
    assert asked == []


async def test_late_with_no_keyframe_to_skip_to_keeps_frames_and_asks_for_one():
    now = [100.0]
    p, asked = processor_at(now)
    for n in range(20):
        p.add_video(encoded(n, n == 0), 100.0 + n * FRAME, 100.0 + n * FRAME)
    await p.next_video()  # the keyframe
    now[0] = 100.0 + 19.5 * FRAME  # 0.6 s late, nothing decodable to jump to
    _, frame = await p.next_video()
    assert frame.pts == 1 * 3000 and p.counts.video_late_frames == 0
    assert asked == ["playout"]


def test_the_queue_starts_at_a_keyframe_and_overflow_drops_whole_groups():
    now = [100.0]
    p, asked = processor_at(now)
    p.add_video(encoded(0, False), 100.0, 100.0)  # nothing decodes before a keyframe
    assert p.counts.video_waiting_keyframe_frames == 1 and not p.stats()["video_queue_frames"]
    for n in range(1, 100):  # 3.3 s of frames, a keyframe every 30, into a 2 s queue
        p.add_video(encoded(n, n % 30 == 1), 100.0 + n * FRAME, 100.0 + n * FRAME)
    head = p._video[0][1]
    assert isinstance(head, EncodedVideo) and head.keyframe  # whole groups dropped
    assert head.pts == 61 * 3000 and p.counts.video_overflow_frames == 60  # two groups of 30
    assert asked == []
    # a keyframe is queued: a request is answered by it, nothing goes upstream
    track = CloudTrack(p)
    track.request_keyframe("viewer")
    assert asked == [] and p.counts.keyframe_requests_queued == 1
    p._video.clear()
    track.request_keyframe("viewer")
    assert asked == ["viewer"]


# --- a fan-out subscription -------------------------------------------------------------------
class PacketSource(MediaStreamTrack):
    """Releases the packets it is given, like a forwarding CloudTrack."""

    kind = "video"

    def __init__(self) -> None:
        super().__init__()
        self.queue: asyncio.Queue[av.Packet] = asyncio.Queue()
        self.frames_sent = 0
        self.asked: list[str] = []

    def put(self, n: int, keyframe: bool) -> None:
        packet = av.Packet(bytes([n]))
        packet.is_keyframe = keyframe
        packet.pts = n
        self.queue.put_nowait(packet)

    def request_keyframe(self, source: str) -> None:
        self.asked.append(source)

    async def recv(self) -> av.Packet:
        packet = await self.queue.get()
        self.frames_sent += 1
        return packet


async def settle(source: PacketSource) -> None:
    while not source.queue.empty():
        await asyncio.sleep(0)
    await asyncio.sleep(0)


async def test_a_subscriber_starts_at_a_keyframe_asks_for_one_and_skips_by_groups():
    source = PacketSource()
    fanout = OutputFanout(source, None)
    try:
        sub, _ = fanout.subscribe(audio=False, name="viewer")
        assert sub is not None
        first = asyncio.ensure_future(sub.recv())
        await asyncio.sleep(0)
        assert source.asked == ["viewer"]  # joining asks the cloud for a keyframe
        source.put(1, False)
        source.put(2, True)
        assert (await first).pts == 2  # not the frame before the keyframe
        assert sub.waited_for_keyframe == 1
        # a reader that fell behind: 14 frames queued, a keyframe at 8
        for n in range(3, 17):
            source.put(n, n == 8)
        await settle(source)
        assert (await sub.recv()).pts == 8  # skipped up to the newest keyframe
        assert sub.skipped == 5
        # behind again with no keyframe to skip to: kept, and one is asked for
        for n in range(17, 17 + 20):
            source.put(n, False)
        await settle(source)
        assert (await sub.recv()).pts == 9
        assert source.asked[-1] == "viewer" and len(source.asked) >= 2
    finally:
        await fanout.close()


# --- upstream coalescing ------------------------------------------------------------------------
async def test_requests_are_coalesced_while_one_is_out_and_a_keyframe_answers_it():
    now = [10.0]
    sent: list[float] = []

    async def send() -> bool:
        sent.append(now[0])
        return True

    up = UpstreamKeyframes(send, lambda: 0.05, clock=lambda: now[0])
    for source in ("page", "viewer", "viewer"):
        up.request(source)
    await asyncio.sleep(0)
    assert len(sent) == 1 and up.sent == 1 and up.coalesced == 2
    now[0] += 0.03
    up.frame(keyframe=True)  # answered: the next request goes at once
    assert up.answered == 1 and up.latencies[-1] == pytest.approx(0.03)
    # asked, sent, answered: what benchmarks/keyframe_latency.py lines up with the cloud's
    asked = now[0] - 0.03
    assert up.stats()["timeline_monotonic"] == [pytest.approx([asked, asked, now[0]])]
    up.request("page")
    await asyncio.sleep(0)
    assert len(sent) == 2
    now[0] += 0.05 + FRAME + 0.021  # unanswered past rtt + a frame + margin: sent again
    up.request("decoder")
    await asyncio.sleep(0)
    assert len(sent) == 3
    assert up.stats()["requested"] == {"page": 2, "viewer": 2, "decoder": 1}
    up.close()
