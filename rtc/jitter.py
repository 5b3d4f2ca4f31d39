"""Receive-side jitter buffers made for loss: a hole waits a short, adaptive deadline.

aiortc's own buffers wait for a missing packet until their capacity overflows (16 audio
packets, 512 video packets), then throw good media away; they complete a video frame only
when the next frame's first packet arrives; they ask for each lost packet once. These
buffers are pure logic on ``(sequence number, RTP timestamp, payload, arrival)`` (no
aiortc, no I/O) so they can be tested packet by packet; ``rtc/receive_path.py`` plugs them
into aiortc's receivers.

Both release media in sequence order as soon as it is complete. A hole is retransmission-
requested at once (NACK) and again after each estimated round trip while there is time;
once the packets behind it have waited :attr:`~_Retransmissions.deadline` the hole is
given up: audio gets a *lost* unit (the decoder conceals it, from the next packet's
in-band FEC when it carries some), video skips to the next keyframe and asks for one.
The deadline follows the measured retransmission time (1.5 round trips + 10 ms, within
bounds), so a near cloud recovers almost every loss and a far one waits no longer than
it must.

Audio can also be told its playout budget (:attr:`AudioJitterBuffer.budget`: how long a
packet may wait here past its ordinary arrival and still be played). Each hole is then
decided on its own: when a retransmission asked for now cannot come back (the measured
round trip) before the hole's own playout deadline, it is given up as soon as a merely
reordered packet would have come (``REORDER_GRACE``, within the deadline), so the decoder
rebuilds it from the next packet's in-band FEC or conceals it while everything behind it
is still in time; otherwise it waits up to that deadline, never past it. Such holes are
still asked for once: the late retransmission keeps the round trip measured, and the
sender learns of the loss (rtc/opus.py keeps FEC on). :meth:`AudioJitterBuffer.recent_holes`
says how much loss there has been lately (the relay's playout makes room for
retransmissions while it persists).
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from dataclasses import dataclass

#: the sequence space
SEQ_MOD = 1 << 16
#: a jump this far (either way) is a new stream (a sender restart), not loss or reordering
RESET_DISTANCE = 3000
#: a missing packet is asked for at most this many times
MAX_NACKS = 3
#: a keyframe asked for and not seen is asked for again after this (or two round trips)
KEYFRAME_RETRY = 0.2
#: a retransmission makes a hole's deadline when round trip x this + RTX_MARGIN fits
RTX_RTT_FACTOR = 1.2
RTX_MARGIN = 0.005
#: a hole no retransmission can fill still waits this long (never past its deadline): it
#: may be a packet merely reordered on the path
REORDER_GRACE = 0.03
#: given-up packets whose retransmission is still awaited for a round-trip sample
GONE_MEMORY = 256


def seq_diff(a: int, b: int) -> int:
    """``a - b`` in the 16-bit sequence space, in -32768..32767."""
    return (a - b + SEQ_MOD // 2) % SEQ_MOD - SEQ_MOD // 2


@dataclass
class AudioUnit:
    """One packet's worth of audio for the decoder: ``payload`` None means lost."""

    timestamp: int
    payload: bytes | None
    #: for a lost unit, the next packet's payload when it is here (its in-band FEC data)
    next_payload: bytes | None = None
    #: samples this unit spans (what a lost one must be concealed for)
    duration: int = 960


@dataclass
class VideoFrameData:
    """One complete encoded video frame."""

    timestamp: int
    data: bytes
    keyframe: bool


@dataclass
class _Held:
    timestamp: int
    payload: bytes
    arrival: float
    marker: bool = False


class _Retransmissions:
    """Which missing packets to ask for and when; the round-trip estimate and deadline."""

    def __init__(self, *, min_wait: float, max_wait: float, initial_rtt: float):
        self.min_wait = min_wait
        self.max_wait = max_wait
        self.rtt = initial_rtt
        self._asked: dict[int, tuple[float, int]] = {}  # seq -> (last asked, times)
        #: given up while asked for: a late retransmission still measures the round trip
        self._gone: collections.OrderedDict[int, float] = collections.OrderedDict()
        self.nacks_sent = 0
        self.recovered = 0
        self.rtt_samples = 0

    @property
    def deadline(self) -> float:
        """How long packets behind a hole wait for it: one retransmission, with margin."""
        return min(self.max_wait, max(self.min_wait, 1.5 * self.rtt + 0.01))

    def due(self, missing: list[int], now: float, *, new_only: bool = False) -> list[int]:
        """The missing packets to NACK now: new ones, and (unless ``new_only``) ones asked
        a round trip ago."""
        retry = 1.5 * self.rtt + 0.01
        out = []
        for seq in missing:
            last, times = self._asked.get(seq, (None, 0))
            if last is None or not new_only and times < MAX_NACKS and now - last >= retry:
                self._asked[seq] = (now, times + 1)
                out.append(seq)
        self.nacks_sent += len(out)
        return out

    def can_make(self, wait: float) -> bool:
        """Whether a retransmission asked for now comes back within ``wait`` seconds."""
        return self.rtt * RTX_RTT_FACTOR + RTX_MARGIN <= wait

    def arrived(self, seq: int, now: float) -> None:
        asked = self._asked.pop(seq, None)
        if asked is not None:  # a retransmission: it took about one round trip
            self.recovered += 1
            self._sample(now - asked[0])

    def arrived_late(self, seq: int, now: float) -> None:
        """A packet came after its slot was given up: if it was asked for, it still tells
        the round trip."""
        asked = self._gone.pop(seq, None)
        if asked is not None:
            self._sample(now - asked)

    def _sample(self, seconds: float) -> None:
        sample = min(max(seconds, 0.001), 1.0)
        self.rtt_samples += 1
        # a longer round trip is believed faster than a shorter one: waiting too little
        # for a retransmission loses audio, asking too early only costs a NACK
        weight = 0.5 if sample > self.rtt else 0.2
        self.rtt += weight * (sample - self.rtt)

    def forget(self, seq: int) -> None:
        asked = self._asked.pop(seq, None)
        if asked is not None:
            self._gone[seq] = asked[0]
            while len(self._gone) > GONE_MEMORY:
                self._gone.popitem(last=False)

    def clear(self) -> None:
        self._asked.clear()
        self._gone.clear()


class _SequencedBuffer:
    """Packets held by sequence number from ``next_seq`` on; shared by audio and video."""

    def __init__(self, *, capacity: int, min_wait: float, max_wait: float,
                 initial_rtt: float, clock: Callable[[], float]):
        self.capacity = capacity
        self.clock = clock
        self.next_seq: int | None = None
        self.held: dict[int, _Held] = {}
        self.nacks = _Retransmissions(min_wait=min_wait, max_wait=max_wait,
                                      initial_rtt=initial_rtt)
        self.received = 0
        self.duplicates = 0
        #: arrived after their slot was given up (too late to play)
        self.late = 0
        self.resets = 0
        self._pending_nacks: list[int] = []

    def _store(self, seq: int, held: _Held) -> bool:
        """Hold one packet; False when it is a duplicate or came too late."""
        self.received += 1
        if self.next_seq is None:
            self.next_seq = seq
        distance = seq_diff(seq, self.next_seq)
        if abs(distance) >= RESET_DISTANCE:
            self._reset(seq)
            distance = 0
        if distance < 0:
            self.late += 1
            self.nacks.arrived_late(seq, held.arrival)
            return False
        if seq in self.held:
            self.duplicates += 1
            return False
        self.nacks.arrived(seq, held.arrival)
        self.held[seq] = held
        return True

    def _reset(self, seq: int) -> None:
        self.held.clear()
        self.nacks.clear()
        self.next_seq = seq
        self.resets += 1

    def missing(self) -> list[int]:
        """Sequence numbers between ``next_seq`` and the newest held packet not yet here."""
        if not self.held or self.next_seq is None:
            return []
        newest = max(seq_diff(s, self.next_seq) for s in self.held)
        return [(self.next_seq + i) % SEQ_MOD for i in range(newest)
                if (self.next_seq + i) % SEQ_MOD not in self.held]

    def first_missing(self) -> int | None:
        """The first sequence number not held from ``next_seq`` on, when something held
        is behind it (a hole); else None."""
        if not self.held or self.next_seq is None:
            return None
        first = self.next_seq
        while first in self.held:
            first = (first + 1) % SEQ_MOD
        return first if any(seq_diff(s, first) > 0 for s in self.held) else None

    def hole_expired(self, now: float) -> bool:
        """The oldest packet waiting behind the first hole has waited the deadline (a
        frame whose last packets are simply not sent yet is no hole)."""
        first_missing = self.first_missing()
        if first_missing is None:
            return False
        behind = [h.arrival for s, h in self.held.items()
                  if seq_diff(s, first_missing) > 0]
        return now - min(behind) >= self.nacks.deadline

    def take_nacks(self) -> list[int]:
        """The sequence numbers to NACK, gathered since the last call."""
        out, self._pending_nacks = self._pending_nacks, []
        return out

    def _schedule_nacks(self, now: float, *, new_only: bool = False) -> None:
        self._pending_nacks.extend(self.nacks.due(self.missing(), now, new_only=new_only))

    def overflowing(self) -> bool:
        return len(self.held) > self.capacity


class AudioJitterBuffer(_SequencedBuffer):
    """Opus packets in order, each released the moment it is next; holes concealed."""

    def __init__(self, *, capacity: int = 50, min_wait: float = 0.03, max_wait: float = 0.12,
                 initial_rtt: float = 0.03, clock: Callable[[], float],
                 budget: Callable[[], float | None] | None = None):
        super().__init__(capacity=capacity, min_wait=min_wait, max_wait=max_wait,
                         initial_rtt=initial_rtt, clock=clock)
        self.duration = 960  # samples per packet, learnt from consecutive packets
        self.lost = 0
        #: seconds a packet may wait here past its ordinary arrival and still play (the
        #: playout's figure; None or unset: the round-trip deadline alone decides)
        self.budget = budget
        #: holes given up at once: no retransmission could have made their deadline
        self.given_up_early = 0
        #: when holes were first seen (a packet missing when a later one came)
        self.hole_times: collections.deque[float] = collections.deque(maxlen=512)
        #: (when, packets) of each run of packets found missing together (a burst)
        self.bursts: collections.deque[tuple[float, int]] = collections.deque(maxlen=256)
        self._holes_seen: set[int] = set()
        self._last: tuple[int, int] | None = None  # (seq, timestamp) last released

    def add(self, seq: int, timestamp: int, payload: bytes) -> list[AudioUnit]:
        now = self.clock()
        if not self._store(seq, _Held(timestamp, payload, now)):
            return []
        out: list[AudioUnit] = []
        while True:
            self._release_ready(out)
            if not self.held:
                break
            self._note_holes(now)
            if not (self.hole_expired(now) or self.overflowing()):
                self._schedule_nacks(now)
                break
            self._schedule_nacks(now, new_only=True)  # even so: see the module docstring
            out.append(self._give_up_hole())
        return out

    def _note_holes(self, now: float) -> None:
        missing = set(self.missing())
        new = missing - self._holes_seen
        for _ in new:
            self.hole_times.append(now)
        if new:  # the run of consecutive missing packets the new ones belong to
            seq = next(iter(new))
            start = end = seq
            while (start - 1) % SEQ_MOD in missing:
                start = (start - 1) % SEQ_MOD
            while (end + 1) % SEQ_MOD in missing:
                end = (end + 1) % SEQ_MOD
            self.bursts.append((now, seq_diff(end, start) + 1))
        self._holes_seen = missing  # (filled or given up: no longer a hole)

    def longest_recent_burst(self, window: float, now: float | None = None) -> int:
        """The most packets found missing in one run in the last ``window`` seconds."""
        now = self.clock() if now is None else now
        return max((n for t, n in self.bursts if now - t <= window), default=0)

    def recent_holes(self, window: float, now: float | None = None) -> int:
        """Packets found missing in the last ``window`` seconds."""
        now = self.clock() if now is None else now
        return sum(1 for t in self.hole_times if now - t <= window)

    def hole_expired(self, now: float) -> bool:
        """With a budget: the first hole's own playout deadline has come, or no
        retransmission can make it (then at once); without one, the round-trip deadline."""
        budget = self.budget() if self.budget is not None else None
        if budget is None:
            return super().hole_expired(now)
        hole = self.first_missing()
        if hole is None:
            return False
        after = min((s for s in self.held if seq_diff(s, hole) > 0),
                    key=lambda s: seq_diff(s, hole))
        # the hole should have come ``distance`` packets before the first one behind it
        wait = budget - seq_diff(after, hole) * self.duration / 48_000
        waited = now - self.held[after].arrival
        if not self.nacks.can_make(wait):  # only a reordered packet can still come
            if waited >= min(wait, REORDER_GRACE):
                self.given_up_early += 1
                return True
            return False
        return waited >= wait

    def _release_ready(self, out: list[AudioUnit]) -> None:
        assert self.next_seq is not None
        while (held := self.held.pop(self.next_seq, None)) is not None:
            if self._last is not None:
                gap = seq_diff(self.next_seq, self._last[0])
                step = (held.timestamp - self._last[1]) % (1 << 32)
                if gap > 0 and 0 < step // gap <= 5760:  # at most 120 ms per Opus packet
                    self.duration = step // gap
            out.append(AudioUnit(held.timestamp, held.payload, duration=self.duration))
            self._last = (self.next_seq, held.timestamp)
            self.next_seq = (self.next_seq + 1) % SEQ_MOD

    def _give_up_hole(self) -> AudioUnit:
        """The packet at ``next_seq`` is lost: a unit to conceal in its place."""
        assert self.next_seq is not None
        seq = self.next_seq
        if self._last is not None:
            timestamp = (self._last[1] + seq_diff(seq, self._last[0]) * self.duration) % (1 << 32)
        else:  # lost before anything played: place it from the packet behind it
            after = min(self.held, key=lambda s: seq_diff(s, seq))
            timestamp = (self.held[after].timestamp - seq_diff(after, seq) * self.duration) \
                % (1 << 32)
        following = self.held.get((seq + 1) % SEQ_MOD)
        self.nacks.forget(seq)
        self.lost += 1
        self._last = (seq, timestamp)
        self.next_seq = (seq + 1) % SEQ_MOD
        return AudioUnit(timestamp, None, following.payload if following else None, self.duration)

    def stats(self) -> dict[str, int | float]:
        return {"received": self.received, "lost": self.lost, "late": self.late,
                "duplicates": self.duplicates, "nacks_sent": self.nacks.nacks_sent,
                "retransmitted": self.nacks.recovered, "resets": self.resets,
                "wait_ms": round(self.nacks.deadline * 1000, 1),
                "rtt_ms": round(self.nacks.rtt * 1000, 1),
                "given_up_early": self.given_up_early}


class VideoJitterBuffer(_SequencedBuffer):
    """Video frames released when complete (marker bit); a frame that cannot be completed
    in time is skipped together with everything up to the next keyframe, which is asked
    for (``keyframe_wanted``)."""

    def __init__(self, *, is_keyframe: Callable[[bytes], bool], capacity: int = 1024,
                 min_wait: float = 0.04, max_wait: float = 0.15, initial_rtt: float = 0.03,
                 clock: Callable[[], float]):
        super().__init__(capacity=capacity, min_wait=min_wait, max_wait=max_wait,
                         initial_rtt=initial_rtt, clock=clock)
        self.is_keyframe = is_keyframe
        #: nothing is decodable before a keyframe (the first one, and after a skip)
        self.waiting_for_keyframe = True
        self.frames_skipped = 0
        self.keyframe_requests = 0
        self._keyframe_wanted = False
        self._frame_start = True  # next_seq begins a frame (the previous one had a marker)
        self._last_request: float | None = None

    def add(self, seq: int, timestamp: int, payload: bytes, marker: bool) -> list[VideoFrameData]:
        now = self.clock()
        if self._last_request is None:
            self._last_request = now  # the first frame is a keyframe: give it time
        if not self._store(seq, _Held(timestamp, payload, now, marker)):
            return []
        if self.waiting_for_keyframe and \
                now - self._last_request >= max(KEYFRAME_RETRY, 2 * self.nacks.rtt):
            self._request_keyframe(now)  # the last request or its keyframe was lost
        out: list[VideoFrameData] = []
        while True:
            self._release_complete(out)
            if not self.held:
                break
            if not (self.hole_expired(now) or self.overflowing()):
                self._schedule_nacks(now)
                break
            self._skip_to_next_frame()
        return out

    def take_keyframe_request(self) -> bool:
        wanted, self._keyframe_wanted = self._keyframe_wanted, False
        return wanted

    def _release_complete(self, out: list[VideoFrameData]) -> None:
        assert self.next_seq is not None
        while True:
            if not self._frame_start and not self._resync():
                return
            parts, seq = [], self.next_seq
            while (held := self.held.get(seq)) is not None:
                parts.append(held)
                seq = (seq + 1) % SEQ_MOD
                if held.marker:
                    break
            else:
                return  # a hole before the frame's last packet
            if len({p.timestamp for p in parts}) != 1:  # a frame end went missing
                self._frame_start = False
                self._want_keyframe()
                continue
            for i in range(len(parts)):
                del self.held[(self.next_seq + i) % SEQ_MOD]
            self.next_seq = seq
            data = b"".join(p.payload for p in parts)
            keyframe = self.is_keyframe(data)
            if self.waiting_for_keyframe and not keyframe:
                self.frames_skipped += 1  # undecodable without the frames skipped before it
                continue
            self.waiting_for_keyframe = False
            out.append(VideoFrameData(parts[0].timestamp, data, keyframe))

    def _resync(self) -> bool:
        """Mid-frame (its start was given up): drop through the next held frame end."""
        assert self.next_seq is not None
        ends = [s for s, h in self.held.items() if h.marker]
        if not ends:
            return False
        end = min(ends, key=lambda s: seq_diff(s, self.next_seq or 0))
        for i in range(seq_diff(end, self.next_seq) + 1):
            seq = (self.next_seq + i) % SEQ_MOD
            self.held.pop(seq, None)
            self.nacks.forget(seq)
        self.next_seq = (end + 1) % SEQ_MOD
        self._frame_start = True
        return True

    def _skip_to_next_frame(self) -> None:
        """Give up the frame with the first hole: drop through the hole, then resync on
        the next frame end; nothing decodes again before a keyframe, so ask for one."""
        assert self.next_seq is not None
        while True:
            seq = self.next_seq
            self.next_seq = (seq + 1) % SEQ_MOD
            self.nacks.forget(seq)
            if self.held.pop(seq, None) is None:
                break
        self._frame_start = False
        self.frames_skipped += 1
        self._want_keyframe()

    def _want_keyframe(self) -> None:
        if not self.waiting_for_keyframe:
            self._request_keyframe(self.clock())
        self.waiting_for_keyframe = True

    def _request_keyframe(self, now: float) -> None:
        self.keyframe_requests += 1
        self._keyframe_wanted = True
        self._last_request = now

    def stats(self) -> dict[str, int | float]:
        return {"received": self.received, "late": self.late, "duplicates": self.duplicates,
                "nacks_sent": self.nacks.nacks_sent, "retransmitted": self.nacks.recovered,
                "frames_skipped": self.frames_skipped,
                "keyframe_requests": self.keyframe_requests, "resets": self.resets,
                "wait_ms": round(self.nacks.deadline * 1000, 1)}
