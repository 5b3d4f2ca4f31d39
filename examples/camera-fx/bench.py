"""Frames per second of each camera-fx mode at 640x480, one frame per call, as the runner
calls it for a 30 fps camera. ``python bench.py [--device cuda] [--seconds 3]``."""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from camera_fx import MODES, CameraFx

from scope_relay.cloud.pipelines import InputFrame


def measure(mode: str, device: str, seconds: float, size: tuple[int, int]) -> float:
    pipeline = CameraFx(device)
    params = CameraFx.default_params() | {"mode": mode, "hue_shift": 30.0}
    rgb = np.random.default_rng(0).integers(0, 256, (*size, 3), dtype=np.uint8)
    with torch.no_grad():
        pipeline([InputFrame(rgb, 0.0)], params)  # warm-up: grids, kernels
        calls, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            out = pipeline([InputFrame(rgb, calls / 30)], params)
            assert out is not None
            np.asarray(torch.as_tensor(out.video).cpu())  # include the copy back
            calls += 1
    return calls / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    args = parser.parse_args()
    print(f"device {args.device}, {args.width}x{args.height}, torch threads "
          f"{torch.get_num_threads()}")
    for mode in MODES:
        fps = measure(mode, args.device, args.seconds, (args.height, args.width))
        print(f"{mode:>12}: {fps:6.1f} fps ({1000 / fps:.1f} ms/frame)")


if __name__ == "__main__":
    main()
