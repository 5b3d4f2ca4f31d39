"""The page's figures, computed at the relay: a script reading ``/api/v1/stats`` sees what
the performer sees (local/static/js/figures.js computes the same from the relay's counters).

Fed one call per video frame arriving from the cloud (a bounded deque of arrival times);
read when the stats are asked for. Windows match the page's: the received frame rate over
the last 2 s, the generator's speed over the last 6-9 s since media (re)started. Each hop's
video bitrate comes from byte counters sampled when the stats are read (:class:`HopRates`).
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from typing import Any

#: the received frame rate is measured over this much history
FPS_WINDOW = 2.0
#: the generator's speed over at most this much history, and not before this much: long
#: enough to span a chunked generator's bursts (bursty-av: 2 s of media per call)
SPEED_WINDOW, SPEED_MIN = 9.0, 6.0
#: arrivals kept (at 120 fps, 10 s); older ones are forgotten, never counted as drops
MAX_ARRIVALS = 1200


class ArrivalFigures:
    """Video frames reaching the relay from the cloud: received fps and generator speed."""

    def __init__(self, fps: float | None, *, clock: Callable[[], float] = time.monotonic):
        #: the chain's declared frame rate (None: no verdict on speed)
        self.fps = fps if fps and fps > 0 else None
        self._clock = clock
        self._arrivals: collections.deque[float] = collections.deque(maxlen=MAX_ARRIVALS)
        #: when media (re)started: a pause's held picture or the wait for a model's first
        #: output is not the generator's speed
        self._since: float | None = None
        self.rates = HopRates(clock=clock)

    def video_arrived(self) -> None:
        now = self._clock()
        if self._since is None:
            self._since = now
        self._arrivals.append(now)

    def restart(self) -> None:
        """Measure the speed afresh from the next frame on (after a pause or a new hop)."""
        self._since = None

    def _count_since(self, start: float) -> int:
        return sum(1 for t in reversed(self._arrivals) if t >= start) if self._arrivals else 0

    def figures(self, *, paused: bool, camera_driven: bool) -> dict[str, Any]:
        """``fps_received`` (frames a second, last 2 s) and ``generator_speed`` (the
        frames reaching the relay against the pipeline's fps, last 6-9 s: 1.0 is real time;
        ``None`` while paused, for camera-driven chains, or before 6 s of media)."""
        now = self._clock()
        fps_received = None
        if self._arrivals:
            window = min(FPS_WINDOW, now - self._arrivals[0])
            if window >= 0.5:
                fps_received = round(self._count_since(now - window) / window, 2)
        speed = None
        if self.fps and not paused and not camera_driven and self._since is not None:
            span = min(SPEED_WINDOW, now - self._since)
            if span >= SPEED_MIN:
                speed = round(self._count_since(now - span) / (self.fps * span), 3)
        return {"fps_received": fps_received, "generator_speed": speed,
                "pipeline_fps": self.fps}

    def hop_figures(self, stats: dict[str, Any]) -> dict[str, Any]:
        """Each hop's video bitrate (bit/s) from the session's byte counters, and how the
        page hop's video is made: ``cloud_video_bitrate`` (payload arriving from the
        cloud), ``page_video_bitrate`` (forwarded bytes plus any the relay encoded),
        ``page_video_mode`` ("forwarded", "re-encoded", "mixed", or None before video)."""
        received = (stats.get("receive") or {}).get("video") or {}
        forward = stats.get("video_forward") or {}
        encoder = stats.get("video_send") or {}
        forwarded, sent = forward.get("frames") or 0, stats.get("video_frames_sent") or 0
        page_bytes = None
        if isinstance(forward.get("bytes"), int) or isinstance(encoder.get("encoded_bytes"), int):
            page_bytes = (forward.get("bytes") or 0) + (encoder.get("encoded_bytes") or 0)
        rates = self.rates.rates({"cloud": received.get("payload_bytes"), "page": page_bytes})
        mode = (None if not sent else "forwarded" if forwarded >= sent
                else "re-encoded" if not forwarded else "mixed")
        return {"cloud_video_bitrate": rates["cloud"], "page_video_bitrate": rates["page"],
                "page_video_mode": mode}


#: a bitrate is measured over at least this much time (s) ...
RATE_MIN_SPAN = 1.0
#: ... from counter samples taken at most this often (s) when the stats are read; the
#: samples kept (at most RATE_SAMPLES) span >= 16 s, so a rare reader gets the rate since
#: its last read
RATE_SAMPLE_EVERY, RATE_SAMPLES = 0.25, 64


class HopRates:
    """Bitrates (bit/s) of byte counters, from samples taken when the stats are read: the
    relay keeps no timer for them, and a reader sees the rate over the last >= 1 s."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._samples: collections.deque[tuple[float, dict[str, int]]] = collections.deque(
            maxlen=RATE_SAMPLES)

    def rates(self, counters: dict[str, int | None]) -> dict[str, int | None]:
        """Each counter's bit rate since the newest sample >= 1 s old (``None`` before there
        is one, or where a counter is unknown or went back: a rebuilt hop counts anew)."""
        now = self._clock()
        known = {k: v for k, v in counters.items() if isinstance(v, int)}
        base = next((s for s in reversed(self._samples) if now - s[0] >= RATE_MIN_SPAN), None)
        if not self._samples or now - self._samples[-1][0] >= RATE_SAMPLE_EVERY:
            self._samples.append((now, known))
        if base is None:
            return dict.fromkeys(counters)
        since, before = base
        return {k: None if not isinstance(v, int) or before.get(k) is None or v < before[k]
                else round((v - before[k]) * 8 / (now - since)) for k, v in counters.items()}
