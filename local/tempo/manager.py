"""The relay's tempo: which source is on, the quantize setting, and the beat sent to every
session's cloud on that session's own clock.

Each session's grid is the source's grid (``time.time``) moved back by what lies between
the cloud releasing media and the audience hearing it: the relay's offset (the fastest
cloud-release-to-arrival seen, clock difference included) plus its playout delay, extra
delay and loss room (its whole release time), plus what the page reports of its own
(``page_latency``: its receive side and audio output). The cloud then moves it onto the
media clock (``cloud/hosting/session_tempo.py``), so a beat drawn there is heard on the
beat. A session is sent a new grid when the tempo, the quantize setting or its own path
changes by more than :data:`RESEND_SECONDS`, and whenever its cloud hop is a new one.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from scope_relay.local.tempo.source import ManualSource, PageSource, TempoSource
from scope_relay.protocol.parameters import TEMPO, finite_number
from scope_relay.protocol.tempo import (
    TempoGrid,
    check_beats_per_bar,
    check_bpm,
    check_quantize,
)
from scope_relay.util.tasks import OwnedTasks

logger = logging.getLogger(__name__)
#: how often each session's grid is looked at; a tempo change reaches the cloud within this
PUSH_INTERVAL = 0.1
#: a grid that moved less than this (origin, or path) is not sent again
RESEND_SECONDS = 0.002
#: the sources a PUT may name
#: seconds the relay itself sends a media time's picture before its sound: none. Its
#: ``FrameProcessor`` releases both at ``release_time`` and stamps both on one sender-report
#: clock (an early video was tried and left out: docs/architecture.md, Chromium)
RELAY_VIDEO_LEAD = 0.0
SOURCES = ("off", "manual", "link", "midi", "page")


class Playout(Protocol):
    """What the tempo needs of a session's ``FrameProcessor``."""

    offset: float | None
    playout_delay: float
    extra_delay: float
    loss_room: float  # added while the cloud hop loses packets: part of the release time
    queue_room: float  # added while a queue stands on the cloud hop: part of it too


class CloudPeer(Protocol):
    def send_parameters(self, message: str) -> None: ...


class Session(Protocol):
    """What the tempo needs of a ``BrowserSession``."""

    @property
    def processor(self) -> Playout: ...

    @property
    def cloud(self) -> CloudPeer | None: ...


@dataclass
class _Sent:
    #: the cloud hop's client it went to (the object: a new client may reuse a freed id())
    peer: CloudPeer
    grid: TempoGrid
    quantize: str
    listen_delay: float
    video_lead: float


def _same(a: _Sent, b: _Sent) -> bool:
    return (a.peer is b.peer and a.quantize == b.quantize and a.grid.bpm == b.grid.bpm
            and a.grid.playing == b.grid.playing
            and a.grid.beats_per_bar == b.grid.beats_per_bar
            and abs(a.grid.origin - b.grid.origin) < RESEND_SECONDS
            and abs(a.listen_delay - b.listen_delay) < RESEND_SECONDS
            and abs(a.video_lead - b.video_lead) < RESEND_SECONDS)


#: makes a source by name (``link``, ``midi`` need the ``tempo`` extra: ImportError without)
SourceFactory = Callable[[str, float], TempoSource]


class TempoManager:
    """The relay's one tempo; ``start()``, then ``close()``."""

    def __init__(self, sessions: Callable[[], Iterable[Session]], *,
                 make_source: SourceFactory | None = None, clock: Callable[[], float] = time.time):
        self._sessions = sessions
        #: the MIDI input the ``midi`` source opens (None: its own virtual port)
        self.midi_port: str | None = None
        self._make_source = make_source or (
            lambda name, bpm: _default_source(name, bpm, self.midi_port, self.beats_per_bar))
        self._clock = clock
        self.source: TempoSource | None = None
        self.beats_per_bar = 4
        self.quantize = "off"
        #: the page's own output latency (AudioContext.outputLatency), added to every path
        self.page_latency = 0.0
        #: seconds the page shows a media time's picture before its sound, from its stats
        #: (Chromium's lip sync rests anywhere in a ~40 ms band: docs/tempo.md, "Where the
        #: flashes' lead comes from")
        self.page_video_lead = 0.0
        self._sent: dict[int, _Sent] = {}  # id(session) -> what it was sent last
        self._tasks = OwnedTasks()
        self._lock = asyncio.Lock()  # one PUT at a time: a source starts and closes whole
        self.sends = 0

    async def start(self) -> None:
        self._tasks.spawn(self._push_forever())

    async def close(self) -> None:
        await self._tasks.cancel_all()
        if self.source is not None:
            await self.source.close()
            self.source = None

    # --- state --------------------------------------------------------------------------
    def grid(self) -> TempoGrid | None:
        """The source's grid with this relay's bar length (``None``: off or not yet known)."""
        grid = self.source.grid() if self.source is not None else None
        if grid is None:
            return None
        return TempoGrid(grid.bpm, grid.origin, self.beats_per_bar, grid.playing)

    def snapshot(self) -> dict[str, Any]:
        """``GET /api/v1/tempo``."""
        grid = self.grid()
        out: dict[str, Any] = {
            "source": self.source.name if self.source is not None else "off",
            "sources": list(SOURCES), "quantize": self.quantize,
            "beats_per_bar": self.beats_per_bar, "page_latency": self.page_latency,
            "page_video_lead": self.page_video_lead,
            "midi_port": self.midi_port,
            "peers": self.source.peers if self.source is not None else 0,
            "bpm": None, "beat": None, "phase": None, "bar": None, "beat_in_bar": None,
            "playing": False, "sessions": len(self._sent)}
        if grid is not None:
            beat = grid.beat_at(self._clock())
            out.update(bpm=round(beat.bpm, 3), beat=round(beat.beat, 4),
                       phase=round(beat.phase, 4), bar=beat.bar, beat_in_bar=beat.beat_in_bar,
                       playing=beat.playing)
        return out

    async def update(self, body: dict[str, Any]) -> dict[str, Any]:
        """``PUT /api/v1/tempo``: any of source, bpm, quantize, beats_per_bar, page_latency,
        tap. Everything is checked before anything changes (``ValueError`` says what)."""
        unknown = set(body) - {"source", "bpm", "quantize", "beats_per_bar", "page_latency",
                               "page_video_lead", "tap", "beat", "midi_port"}
        if unknown:
            raise ValueError(f"unknown tempo field(s): {', '.join(sorted(unknown))}")
        source = body.get("source")
        if source is not None and source not in SOURCES:
            raise ValueError(f"source must be one of {', '.join(SOURCES)}")
        bpm = check_bpm(body["bpm"]) if "bpm" in body else None
        quantize = check_quantize(body["quantize"]) if "quantize" in body else None
        bpb = check_beats_per_bar(body["beats_per_bar"]) if "beats_per_bar" in body else None
        latency = body.get("page_latency")
        if latency is not None and (isinstance(latency, bool)
                                    or not isinstance(latency, (int, float))
                                    or not 0.0 <= latency <= 1.0):
            raise ValueError("page_latency must be seconds from 0 to 1")
        lead = body.get("page_video_lead")
        if lead is not None and (isinstance(lead, bool) or not isinstance(lead, (int, float))
                                 or not -1.0 <= lead <= 1.0):
            raise ValueError("page_video_lead must be seconds from -1 to 1")
        if body.get("tap") not in (None, True):
            raise ValueError("tap must be true")
        port = body.get("midi_port", self.midi_port)
        if port is not None and (not isinstance(port, str) or not port.strip()
                                 or len(port) > 200):
            raise ValueError("midi_port must be a MIDI input's name (or null: a virtual port)")
        beat = body.get("beat")
        if beat is not None and (finite_number(beat) is None or bpm is None):
            raise ValueError("beat must be a finite number, sent with bpm")
        async with self._lock:
            if port != self.midi_port:
                old_port, self.midi_port = self.midi_port, port
                if self.source is not None and self.source.name == "midi" and source in (
                        None, "midi"):
                    try:  # the new port opens first: if it cannot, the old one stays
                        await self._switch("midi", None, reopen=True)
                    except ValueError:
                        self.midi_port = old_port
                        raise
            if source is not None:
                await self._switch(source, bpm)
            if beat is not None:  # the page's own clock: where it is now
                if not isinstance(self.source, PageSource):
                    raise ValueError("beat is for the page source only")
                assert bpm is not None
                self.source.set_beat(bpm, float(beat))
            elif bpm is not None and self.source is not None:
                self.source.set_bpm(bpm)
            if body.get("tap"):
                if not isinstance(self.source, ManualSource):
                    await self._switch("manual", bpm)
                assert isinstance(self.source, ManualSource)
                self.source.tap()
            if quantize is not None:
                self.quantize = quantize
            if bpb is not None:
                self.beats_per_bar = bpb
                set_quantum = getattr(self.source, "set_quantum", None)
                if set_quantum is not None:  # Link: bar lines agree with the other peers'
                    set_quantum(bpb)
            if latency is not None:
                self.page_latency = float(latency)
            if lead is not None:
                self.page_video_lead = float(lead)
        self.push()  # at once, not on the next tick
        return self.snapshot()

    async def _switch(self, name: str, bpm: float | None, reopen: bool = False) -> None:
        if self.source is not None and self.source.name == name and not reopen:
            return
        try:
            new = None if name == "off" else self._make_source(name, bpm or self._bpm_now())
            if new is not None:
                await new.start()  # (a port or a library that fails leaves the old one on)
        except ImportError as exc:
            raise ValueError(f"the {name} source needs the tempo extra "
                             f"(pip install 'scope-relay[tempo]'): {exc}") from exc
        except OSError as exc:
            raise ValueError(f"the {name} source could not start: {exc}") from exc
        old, self.source = self.source, new
        if old is not None:
            await old.close()

    def _bpm_now(self) -> float:
        grid = self.grid()
        return grid.bpm if grid is not None else 120.0

    # --- to the sessions ----------------------------------------------------------------
    async def _push_forever(self) -> None:
        while True:
            try:
                self.push()
            except Exception:  # a session mid-close must not end the tempo
                logger.exception("sending the tempo failed")
            await asyncio.sleep(PUSH_INTERVAL)

    def push(self) -> None:
        """Send each session its grid where it changed (never blocks: a data-channel send)."""
        grid = self.grid()
        live: set[int] = set()
        for session in list(self._sessions()):
            live.add(id(session))
            peer, processor = session.cloud, session.processor
            if peer is None or processor.offset is None:
                continue
            if grid is None:  # the source went off: the cloud forgets the beat
                if self._sent.pop(id(session), None) is not None:
                    peer.send_parameters(json.dumps({TEMPO: None}))
                continue
            delay = (processor.playout_delay + processor.extra_delay + processor.loss_room
                     + processor.queue_room)
            path = processor.offset + delay
            listen = delay + self.page_latency
            lead = RELAY_VIDEO_LEAD + self.page_video_lead
            sent = _Sent(peer, grid.shifted(-(path + self.page_latency)), self.quantize,
                         listen, lead)
            last = self._sent.get(id(session))
            if last is not None and _same(last, sent):
                continue
            message = {**sent.grid.to_message(), "quantize": self.quantize,
                       "listen_delay": round(listen, 4), "video_lead": round(lead, 4)}
            peer.send_parameters(json.dumps({TEMPO: message}))
            self._sent[id(session)] = sent
            self.sends += 1
        for gone in set(self._sent) - live:
            del self._sent[gone]


def _default_source(name: str, bpm: float, midi_port: str | None = None,
                    beats_per_bar: int = 4) -> TempoSource:
    if name == "manual":
        return ManualSource(bpm)
    if name == "link":
        from scope_relay.local.tempo.link import LinkSource  # the ``tempo`` extra
        return LinkSource(bpm, beats_per_bar)
    if name == "midi":
        from scope_relay.local.tempo.midi_clock import MidiClockSource  # the ``tempo`` extra
        return MidiClockSource(midi_port)
    if name == "page":
        return PageSource(bpm)
    raise ValueError(f"unknown tempo source {name!r}")
