"""Every benchmark's ``--quick`` run as a smoke test, so none can rot unnoticed.

Each script in benchmarks/ runs as its own process (as a user runs it) with ``--quick``:
it must exit 0 and print its whole table, and the verdicts it judges itself (not its
timings: this box is shared and small). A script added to benchmarks/ without a case here
fails ``test_every_benchmark_has_a_quick_case``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from helpers.chromium import CHROMIUM
from helpers.losslab import LossLab
from helpers.process_group import ROOT, running

pytestmark = pytest.mark.benchmark

BENCHMARKS = ROOT / "benchmarks"


@dataclass(frozen=True)
class Quick:
    """One benchmark's quick run: lines its output must have (regular expressions, per
    line), and how long it may take on a loaded 2-core box."""

    script: str
    expect: tuple[str, ...]
    timeout: float = 120.0
    #: why it cannot run on this machine (None: it can)
    unavailable: Callable[[], str | None] = lambda: None


def _no_chromium() -> str | None:
    return None if os.path.exists(CHROMIUM) else f"needs Debian's chromium ({CHROMIUM})"


def _no_chromium_or_link() -> str | None:
    if reason := _no_chromium():
        return reason
    try:
        import aalink  # noqa: F401
    except ImportError:
        return "needs the tempo extra (aalink)"
    return None


def _no_lab() -> str | None:
    reason = LossLab.unavailable()
    return reason and f"the loss lab (root, network namespaces) cannot run here: {reason}"


CASES = [
    Quick("audio_path.py", (
        r"^## Tone quality", r"^## Exact sample counts", r"^## Speed",
        r"relay FrameProcessor path .* us \(budget 20\)",
        # its own verdicts: correctness is judged, speed (a timing) only printed
        r"^quality: OK, sample counts: OK, speed: (OK|MISSED)$")),
    Quick("av_sync.py", (
        r"^flash\s+A/V offset ms", r"^A/V offset: median -?\d", r"^latency: first half median",
        r"^relay: offset")),
    Quick("beat_phase.py", (
        r"^Link peer at 120 BPM; relay: source link", r"^tap AudioContext: ",
        r"^clicks at the audio output: n=\d+ median [-+]\d", r"^flashes at expectedDisplayTime: n=\d+",
        r"^from \(s\)\s+clicks\s+median ms", r"^drift: [-+]\d+\.\d+ ms/min"),
        unavailable=_no_chromium_or_link),
    Quick("browser_av_sync.py", (
        r"^Start -> first picture on screen: \d+ ms", r"^AudioContext: ", r"click - flash \(ms\)",
        r"^after 2 s warm-up: median [-+]\d"), unavailable=_no_chromium),
    Quick("camera_loop.py", (
        r"^camera round trip through 'passthrough' \(\d+ of ~\d+ frames timed",
        r"^relay: playout delay")),
    Quick("capacity.py", (
        r"^pipeline\s+N\s+underruns", r"^test-tone\s+1\s", r"^av-sync\s+1\s",
        r"^test-tone: \d clean sessions", r"^av-sync: \d clean sessions")),
    Quick("control_flood.py", (
        r"^before the flood: victim", r"^flooder: \{'sockets': 1", r"^victim during the flood",
        r"^cloud event loop during the flood: max lag", r"^cloud memory: ")),
    Quick("fast_and_light.py", (
        r"^== start-up and steady latency", r"^== camera round trip", r"^== bare transcode",
        r"^== capacity, CPU, memory", r"^figure\s+ours\s+floor / anchor\s+goal\s+met",
        r"^offer -> first audio / video", r"^cloud release -> relay send, steady",
        r"^camera round trip, passthrough", r"^relay CPU per session vs bare transcode",
        r"^clean sessions on this box\s+\d of 1", r"^memory idle -> after N sessions",
        # with Debian's Chromium its lip-sync rows too
        *(() if _no_chromium() else (r"^lip sync in Chromium", r"^\s+as the tap heard it"))),
        timeout=240.0),
    Quick("keyframe_latency.py", (
        r"^## vp8 640x360 @ 30 fps: 3 PLIs", r"^total\s+3\s+\d", r"^pacer\s+\d",
        # every request split into its stages: the cloud's and relay's timelines line up
        r"^total: median \d", r"^[23] of 3 split in stages")),
    Quick("latency.py", (
        r"^\s+cold\s", r"^\s+0\s+\d", r"^first_audio\s+\d", r"^first_video\s+\d",
        r"^cloud release -> relay send \(ms\)", r"^audio\s+\d+\s+\d", r"^video\s+\d+\s+\d",
        r"^relay: audio underruns", r"^slowest trial's phases", r"^\s+receiver\s+ice_start \d")),
    Quick("lossy_hop.py", (
        r"^loss lab: \w+ backend", r"^profile\s+audio lost", r"^5%\s+\d", r"^3s-freeze\s+\d",
        r"^profile\s+lost after"), unavailable=_no_lab),
    Quick("recording.py", (
        r"process CPU without recording:", r"process CPU while recording:",
        r"recorder worker thread:", r"recorder drops: video \d+, audio \d+",
        r"^encoder alone 320x240 ", r"^encoder alone 1280x720 ")),
    Quick("relay_capacity.py", (
        r"^idle: relay \d+ MB", r"A/V ms med \(worst\)", r"^\s+1\s+\d+\s+\d")),
    Quick("transcode_floor.py", (r"^bare transcode of 'av-sync' .*: \d+\.\d % of one core$",)),
    Quick("video_quality.py", (
        # a picture recognisably the source: a broken frame match reads ~10 dB
        r"^PSNR-Y at the receiver \(dB\)\s+([3-9]\d|2[5-9])\.\d+$", r"^SSIM-Y at the receiver\s+\S+$",
        r"^PSNR-Y, one encode, no relay \(dB\)\s+\S+$", r"^cloud hop video \(Mb/s\)\s+\S+$",
        r"^local hop video \(Mb/s\)\s+\S+$", r"^cloud encoder target \(Mb/s\)\s+\S+$",
        r"^frames/s at the receiver\s+\S+$", r"^relay CPU \(% of a core\)\s+\S+$",
        r"^cloud CPU \(% of a core\)\s+\S+$"), timeout=180.0),
    Quick("viewers.py", (
        r"^0 extra viewer\(s\): relay CPU", r"^1 extra viewer\(s\): relay CPU",
        r"^per extra viewer: relay CPU",
        # its own verdict: viewers share the owner's one cloud session
        r"^cloud sessions: 1; relay viewers: 1;")),
]


def _scripts() -> set[str]:
    """The runnable scripts in benchmarks/ (not the modules they share)."""
    return {p.name for p in BENCHMARKS.glob("*.py") if '__name__ == "__main__"' in p.read_text()}


def test_every_benchmark_has_a_quick_case():
    assert _scripts() == {case.script for case in CASES}


@pytest.mark.parametrize("case", CASES, ids=[c.script.removesuffix(".py") for c in CASES])
def test_quick_run_prints_its_figures(case: Quick):
    if reason := case.unavailable():
        pytest.skip(reason)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "SCOPE_RELAY_ICE_LOOPBACK": "1"}
    env.pop("SCOPE_CLOUD_API_KEY", None)
    with running([sys.executable, str(BENCHMARKS / case.script), "--quick"], env) as run:
        try:
            status = run.popen.wait(case.timeout)
        except subprocess.TimeoutExpired:  # (the group is stopped as the block ends)
            pytest.fail(f"{case.script} --quick still running after {case.timeout:g} s:\n"
                        f"{run.output_tail()}")
        output = run.output
    assert status == 0, f"{case.script} --quick exited {status}:\n{run.output_tail()}"
    missing = [p for p in case.expect if not re.search(p, output, re.MULTILINE)]
    assert not missing, f"{case.script} --quick printed no line matching {missing}:\n{output}"
    assert "Traceback" not in output, output
