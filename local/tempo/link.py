"""Ableton Link as a tempo source (``aalink``, the ``tempo`` extra): the relay joins the
Link session on the LAN like any peer (Live, Resolume, a phone app), follows its tempo and
beat, and can set the session's tempo (``PUT /api/v1/tempo {"bpm"}`` leads every peer).

The grid is read on demand: the session's beat now, between two reads of the wall clock,
gives the origin (``now - beat * 60 / bpm``), so it follows Link's own clock without any
polling task. ``quantum`` (the relay's beats per bar) is set on the Link instance, so bar lines agree
with the other peers' (Link aligns phase within a quantum)."""

from __future__ import annotations

import time

from aalink import Link

from scope_relay.protocol.tempo import TempoGrid, check_bpm


class LinkSource:
    name = "link"

    def __init__(self, bpm: float = 120.0, quantum: int = 4):
        self._bpm = check_bpm(bpm)
        self._quantum = quantum
        self._link: Link | None = None

    async def start(self) -> None:
        """Join the session (on the running loop, which aalink schedules on)."""
        link = Link(self._bpm)
        link.quantum = self._quantum
        link.enabled = True
        self._link = link

    def grid(self) -> TempoGrid | None:
        link = self._link
        if link is None:
            return None
        before = time.time()
        beat, bpm = float(link.beat), float(link.tempo)
        now = (before + time.time()) / 2
        return TempoGrid(bpm, now - beat * 60.0 / bpm, self._quantum, True)

    def set_quantum(self, beats: int) -> None:
        """Beats per bar: Link aligns bar lines (phase within a quantum) with the peers."""
        self._quantum = beats
        if self._link is not None:
            self._link.quantum = beats

    def set_bpm(self, bpm: float) -> None:
        bpm = check_bpm(bpm)
        if self._link is not None:
            self._link.tempo = bpm
        self._bpm = bpm

    @property
    def peers(self) -> int:
        return int(self._link.num_peers) if self._link is not None else 0

    async def close(self) -> None:
        if self._link is not None:
            self._link.enabled = False
            self._link = None
