"""benchmarks/video_quality.py --quick as a smoke test: the cloud app and relay as
processes, hd-test through both, every figure printed and the pictures recognisably the
source (until the suite runs every benchmark's quick mode from tests/benchmarks)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from helpers.process_group import ROOT, running

LINES = {name: rf"^{re.escape(name)}\s+(\S+)$" for name in (
    "PSNR-Y at the receiver (dB)", "SSIM-Y at the receiver", "PSNR-Y, one encode, no relay (dB)",
    "cloud hop video (Mb/s)", "local hop video (Mb/s)", "cloud encoder target (Mb/s)",
    "frames/s at the receiver", "relay CPU (% of a core)", "cloud CPU (% of a core)")}


def test_video_quality_quick_prints_every_figure():
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "SCOPE_RELAY_ICE_LOOPBACK": "1"}
    env.pop("SCOPE_CLOUD_API_KEY", None)
    script = str(ROOT / "benchmarks" / "video_quality.py")
    with running([sys.executable, script, "--quick"], env) as run:
        try:
            status = run.popen.wait(180)
        except subprocess.TimeoutExpired:
            pytest.fail(f"video_quality.py --quick still running after 180 s:\n"
                        f"{run.output_tail()}")
        output = run.output
    assert status == 0, output
    figures = {}
    for name, pattern in LINES.items():
        match = re.search(pattern, output, re.MULTILINE)
        assert match, f"no {name!r} line:\n{output}"
        figures[name] = match.group(1)
    # a picture that is recognisably the source (PSNR of a broken match is ~10 dB)
    assert float(figures["PSNR-Y at the receiver (dB)"]) > 25, output
    assert float(figures["SSIM-Y at the receiver"]) > 0.7, output
