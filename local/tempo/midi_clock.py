"""MIDI clock as a tempo source (``mido`` + ``python-rtmidi``, the ``tempo`` extra).

:class:`MidiClock` is the clock itself, with no port: 24 ticks a beat, ``start`` (the next
tick is beat 0), ``stop`` (the position holds), ``continue``, ``songpos`` (16th notes). Its
grid is a least-squares line through the last :data:`WINDOW` ticks' arrival times, which
smooths the jitter of USB and of the sender's own timer (the BPM is that line's slope, the
origin where it puts tick 0). :class:`MidiClockSource` feeds it from an input port: a named
one, or by default a virtual port that a DAW sends its clock to (``scope-relay tempo``)."""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from typing import Any

from scope_relay.protocol.tempo import MAX_BPM, MIN_BPM, TempoGrid

PPQN = 24
#: ticks the BPM line is fitted through (two beats)
WINDOW = 48
#: fewer ticks than this: no grid yet
MIN_TICKS = 6
#: a pause longer than this between ticks starts the fit afresh (the clock had stopped)
GAP_SECONDS = 0.5
VIRTUAL_PORT = "scope-relay tempo"


class MidiClock:
    """The beat from MIDI clock messages; thread-safe (rtmidi calls back on its own thread)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tick = 0  # index of the next tick (0 = beat 0)
        self._times: collections.deque[tuple[int, float]] = collections.deque(maxlen=WINDOW)
        self.playing = True  # a clock that runs without a start is playing
        self.ticks = 0

    def feed(self, kind: str, at: float, pos: int = 0) -> None:
        """One message: ``clock``, ``start``, ``stop``, ``continue`` or ``songpos``."""
        with self._lock:
            if kind == "clock":
                if self._times and at - self._times[-1][1] > GAP_SECONDS:
                    self._times.clear()
                self._times.append((self._tick, at))
                self._tick += 1
                self.ticks += 1
            elif kind == "start":
                self._tick, self.playing = 0, True
                self._times.clear()
            elif kind == "stop":
                self.playing = False
            elif kind == "continue":
                self.playing = True
            elif kind == "songpos":
                self._tick = pos * PPQN // 4
                self._times.clear()

    def grid(self) -> TempoGrid | None:
        with self._lock:
            points = list(self._times)
            playing = self.playing
        if len(points) < MIN_TICKS:
            return None
        n = len(points)
        mean_k = sum(k for k, _ in points) / n
        mean_t = sum(t for _, t in points) / n
        var = sum((k - mean_k) ** 2 for k, _ in points)
        slope = sum((k - mean_k) * (t - mean_t) for k, t in points) / var  # seconds a tick
        if slope <= 0:
            return None
        bpm = min(max(60.0 / (slope * PPQN), MIN_BPM), MAX_BPM)
        return TempoGrid(bpm, mean_t - slope * mean_k, 4, playing)


class MidiClockSource:
    name = "midi"

    def __init__(self, port: str | None = None, clock: Callable[[], float] = time.time):
        self.port_name = port
        self.clock = MidiClock()
        self._now = clock
        self._port: Any = None

    async def start(self) -> None:
        """Open the port (``OSError`` when MIDI is not there: no ALSA sequencer, no port)."""
        import mido

        try:
            if self.port_name is None:
                self._port = mido.open_input(VIRTUAL_PORT, virtual=True, callback=self._received)
            else:
                self._port = mido.open_input(self.port_name, callback=self._received)
        except (OSError, RuntimeError, SystemError) as exc:  # rtmidi's own errors included
            raise OSError(f"MIDI input {self.port_name or VIRTUAL_PORT!r}: {exc}") from exc

    def _received(self, message: Any) -> None:
        """rtmidi's thread: stamp on arrival, never block."""
        kind = message.type
        if kind in ("clock", "start", "stop", "continue"):
            self.clock.feed(kind, self._now())
        elif kind == "songpos":
            self.clock.feed(kind, self._now(), message.pos)

    def grid(self) -> TempoGrid | None:
        return self.clock.grid()

    def set_bpm(self, bpm: float) -> None:
        raise ValueError("the MIDI clock sets the tempo; change it at its sender")

    @property
    def peers(self) -> int:
        return 0

    async def close(self) -> None:
        if self._port is not None:
            self._port.close()
            self._port = None
