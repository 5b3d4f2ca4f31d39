"""How fast prompt-synth renders: milliseconds per call (0.5 s of 320x240 video at 24 fps
and 48 kHz audio), steady and during a crossfade (two prompt mixes rendered).
``python bench.py [--device cuda] [--calls 20]``."""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from prompt_synth import PromptSynth


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--calls", type=int, default=20)
    args = parser.parse_args()
    pipeline = PromptSynth(args.device)
    params = PromptSynth.default_params() | {"crossfade": 10.0}
    chunk = PromptSynth.chunk_frames / PromptSynth.fps
    with torch.no_grad():
        pipeline(None, params)  # warm-up
        for label, change in (("steady", False), ("crossfading", True)):
            if change:
                params = params | {"prompts": [{"text": "thunder over a neon city", "weight": 1}]}
            times = []
            for _ in range(args.calls):
                start = time.perf_counter()
                pipeline(None, params)
                times.append(time.perf_counter() - start)
            median = statistics.median(times)
            print(f"{label:>12}: {median * 1000:6.1f} ms per {chunk:.1f} s chunk "
                  f"({chunk / median:.1f}x real time), device {args.device}, "
                  f"torch threads {torch.get_num_threads()}")


if __name__ == "__main__":
    main()
