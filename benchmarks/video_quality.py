"""Picture quality through the relay: PSNR and SSIM at the receiver against the source.

The built-in ``hd-test`` pipeline (smooth moving colour over a soft texture, its frame
number drawn in as blocks) streams cloud app -> relay -> a receiver here, the cloud app and
the relay as separate processes (as a user runs them). Each received frame is matched to
its source by its number and compared on luma (scikit-image's PSNR and SSIM); beside it, a
reference: the same source frames through one encode at the cloud hop's measured bitrate
and one decode, no relay, and through two (what a transcoding relay does to the picture,
without its timing). Also printed: both hops' video bitrates (RTP payload), the relay's
and the cloud's CPU (% of one core), frames per second at the receiver, and the cloud
encoder's target, and the codec each hop carried.

    .venv/bin/python benchmarks/video_quality.py [--height 720] [--fps 30] [--seconds 10]
        [--video-bitrate BPS] [--codec vp8|h264|both] [--quick]

``--codec``: the cloud's ``--video-codec`` (the reference encodes use it too); ``both``
runs a VP8 session, then an H.264 one, and prints them side by side.

``--quick``: 360 lines at 15 fps for 2 s, the suite's smoke test (its figures mean little).
"""

from __future__ import annotations

import argparse
import asyncio
import fractions
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Any

os.environ.setdefault("SCOPE_RELAY_ICE_LOOPBACK", "1")

import av
import httpx
import numpy as np
from aiortc import RTCPeerConnection
from aiortc.mediastreams import MediaStreamError
from relay_capacity import cpu_seconds, offer_hd_test, start_pair  # this folder's (run as a script)
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from scope_relay.cloud.builtin_pipelines.hd_test import frame_size, hd_test_frame, luma
from scope_relay.rtc.ice import rtc_configuration
from scope_relay.rtc.receive_path import ReceivePath, install_receive_path
from scope_relay.testing.camera import frame_number

#: frames compared per run (spread over the window; SSIM of a 1080p frame takes ~0.3 s)
COMPARED = 40


@dataclass
class Received:
    """What the receiver kept: every frame's number and arrival, some frames' luma."""

    every: int  # keep the luma of frames whose number is a multiple of this
    arrivals: list[tuple[float, int | None]] = field(default_factory=list)
    kept: dict[int, np.ndarray] = field(default_factory=dict)


async def receive(pc: RTCPeerConnection, track: Any, out: Received) -> None:
    try:
        while True:
            frame = await track.recv()
            y = luma(frame.to_ndarray(format="yuv420p"))
            number = frame_number(y)
            out.arrivals.append((time.monotonic(), number))
            if number is not None and number % out.every == 0 and number not in out.kept:
                out.kept[number] = y.copy()
    except MediaStreamError:
        pass


def compare(pairs: list[tuple[np.ndarray, np.ndarray]]) -> tuple[float, float]:
    """Mean PSNR (dB) and mean SSIM of (source, received) luma pairs."""
    psnr = [peak_signal_noise_ratio(s, r, data_range=255) for s, r in pairs]
    ssim = [structural_similarity(s, r, data_range=255) for s, r in pairs]
    return statistics.fmean(psnr), statistics.fmean(ssim)


def through_codecs(frames: int, width: int, height: int, fps: float, bitrates: list[int],
                   numbers: list[int], codec: str = "vp8") -> tuple[float, float]:
    """PSNR/SSIM of the first ``frames`` source frames through one encode and decode per
    entry of ``bitrates`` (the cloud's encoder class capped at that rate), compared on
    ``numbers``: one entry is the one-encode reference, two are what a transcoding relay
    does to the picture, without any of its timing. ``codec``: ``vp8`` or ``h264``."""
    from aiortc.codecs import depayload, get_decoder, get_encoder
    from aiortc.jitterbuffer import JitterFrame
    from aiortc.rtcrtpparameters import RTCRtpCodecParameters

    from scope_relay.rtc.video_codecs import VIDEO_CODECS
    from scope_relay.rtc.video_encoder import configure_video

    parameters = RTCRtpCodecParameters(mimeType=VIDEO_CODECS[codec], clockRate=90_000)
    stages = []
    for rate in bitrates:
        configure_video(rate)
        encoder = get_encoder(parameters)
        # a reference is every frame at full size and this rate: no congestion ladder
        # (it has no receiver, and would skip frames or halve them under a low rate)
        setattr(encoder, "_adapt", lambda frame, fps, wanted=False: frame)  # noqa: B010 (our encoder)
        stages.append((encoder, get_decoder(parameters)))
    wanted, pairs = set(numbers), []
    for n in range(frames):
        source = hd_test_frame(n, width, height, fps)
        picture = av.VideoFrame.from_ndarray(source, format="yuv420p")
        for encoder, decoder in stages:
            picture.pts, picture.time_base = round(n * 90_000 / fps), fractions.Fraction(1, 90_000)
            payloads, timestamp = encoder.encode(picture)
            data = b"".join(depayload(parameters, p) for p in payloads)
            decoded = decoder.decode(JitterFrame(data=data, timestamp=timestamp))
            if not decoded or not isinstance(decoded[0], av.VideoFrame):
                break
            picture = decoded[0]
        else:
            if n in wanted:
                pairs.append((luma(source), luma(picture.to_ndarray(format="yuv420p"))))
    return compare(pairs)


async def relay_video_stats(http: httpx.AsyncClient) -> dict[str, Any]:
    sessions = (await http.get("/api/v1/stats")).json()["sessions"]
    return sessions[0] if sessions else {}


async def cloud_video_stats(url: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        body = (await http.get("/api/v1/stats")).json()
    sessions = body.get("sessions") or []
    return sessions[0] if sessions else {}


async def run(height: int, fps: float, seconds: float, video_bitrate: int | None,
              codec: str = "vp8") -> dict:
    """One session measured, the cloud sending ``codec``; every figure in a dict (see
    :func:`report`)."""
    width, height = frame_size(height)
    env = {**os.environ, "SCOPE_RELAY_ICE_LOOPBACK": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("SCOPE_CLOUD_API_KEY", None)
    rate_flag = [] if video_bitrate is None else ["--video-bitrate", str(video_bitrate)]
    cloud, cloud_url, relay, relay_url = await start_pair(
        env, [*rate_flag, "--video-codec", codec], rate_flag)
    pc = RTCPeerConnection(rtc_configuration())
    try:
        transceiver = pc.addTransceiver("video", direction="recvonly")
        path: ReceivePath = install_receive_path(transceiver.receiver, "video")
        got = Received(every=max(1, round(seconds * fps / COMPARED)))
        tasks: list[asyncio.Task] = []
        pc.on("track", lambda track: tasks.append(
            asyncio.ensure_future(receive(pc, track, got))))
        await offer_hd_test(pc, relay_url, height, fps)
        async with httpx.AsyncClient(base_url=relay_url, timeout=120) as http:
            deadline = time.monotonic() + 60
            while not got.arrivals and time.monotonic() < deadline:
                await asyncio.sleep(0.1)  # polling for the first frame, bounded
            if not got.arrivals:
                raise RuntimeError("no video reached the receiver in 60 s")
            await asyncio.sleep(2.0)  # past start-up (the rate settles): a window follows
            relay0 = await relay_video_stats(http)
            local0 = path.payload_bytes
            cpu0 = {p.pid: cpu_seconds(p.pid) for p in (relay, cloud)}
            t0 = time.monotonic()
            frames0 = len(got.arrivals)
            await asyncio.sleep(seconds)  # the measured window
            elapsed = time.monotonic() - t0
            frames = len(got.arrivals) - frames0
            relay1 = await relay_video_stats(http)
            cloud_stats = await cloud_video_stats(cloud_url)
            cpu = {pid: (cpu_seconds(pid) - c) / elapsed * 100 for pid, c in cpu0.items()}
            local_bps = (path.payload_bytes - local0) * 8 / elapsed
        for task in tasks:
            task.cancel()
        cloud_bytes = [s.get("receive", {}).get("video", {}).get("payload_bytes", 0)
                       for s in (relay0, relay1)]
        cloud_bps = (cloud_bytes[1] - cloud_bytes[0]) * 8 / elapsed
        numbers = sorted(got.kept)
        received = compare([(luma(hd_test_frame(n, width, height, fps)), got.kept[n])
                            for n in numbers])
        last = max(n for _, n in got.arrivals if n is not None)
        rate = max(int(cloud_bps), 300_000)
        compared = [n for n in numbers if n <= last]
        ref = through_codecs(last + 1, width, height, fps, [rate], compared, codec)
        twice = through_codecs(last + 1, width, height, fps, [rate, rate], compared, codec)
        return {"codec": codec, "cloud_codec": cloud_stats.get("video_codec"),
                "page_codec": relay1.get("video_codec"),
                "width": width, "height": height, "fps": fps, "received_fps": frames / elapsed,
                "psnr": received[0], "ssim": received[1], "compared": len(numbers),
                "ref_psnr": ref[0], "ref_ssim": ref[1], "twice_psnr": twice[0],
                "twice_ssim": twice[1], "cloud_bps": cloud_bps,
                "local_bps": local_bps, "relay_cpu": cpu[relay.pid],
                "cloud_cpu": cpu[cloud.pid],
                "cloud_target": (cloud_stats.get("video_send") or {}).get("target_bitrate"),
                "relay_unmatched": sum(n is None for _, n in got.arrivals),
                "cloud_stats": cloud_stats, "relay_stats": relay1}
    finally:
        await pc.close()
        for proc in (relay, cloud):
            proc.kill()
            await proc.wait()


def rows(r: dict) -> list[tuple[str, str]]:
    target = "-" if r["cloud_target"] is None else f"{r['cloud_target'] / 1e6:.2f}"
    return [("video codec, cloud hop / page hop", f"{r['cloud_codec']}/{r['page_codec']}"),
            ("PSNR-Y at the receiver (dB)", f"{r['psnr']:.2f}"),
            ("SSIM-Y at the receiver", f"{r['ssim']:.4f}"),
            ("PSNR-Y, one encode, no relay (dB)", f"{r['ref_psnr']:.2f}"),
            ("SSIM-Y, one encode, no relay", f"{r['ref_ssim']:.4f}"),
            ("PSNR-Y, two encodes, no timing (dB)", f"{r['twice_psnr']:.2f}"),
            ("SSIM-Y, two encodes, no timing", f"{r['twice_ssim']:.4f}"),
            ("cloud hop video (Mb/s)", f"{r['cloud_bps'] / 1e6:.2f}"),
            ("local hop video (Mb/s)", f"{r['local_bps'] / 1e6:.2f}"),
            ("cloud encoder target (Mb/s)", target),
            ("frames/s at the receiver", f"{r['received_fps']:.1f}"),
            ("relay CPU (% of a core)", f"{r['relay_cpu']:.0f}"),
            ("cloud CPU (% of a core)", f"{r['cloud_cpu']:.0f}"),
            ("frames without a readable number", f"{r['relay_unmatched']}")]


def report(results: list[dict], verbose: bool = False) -> None:
    """One column per session (one per codec)."""
    first = results[0]
    print(f"hd-test {first['width']}x{first['height']} @ {first['fps']:g} fps "
          f"({', '.join(str(r['compared']) for r in results)} frames compared)")
    print(f"{'figure':<36}" + "".join(f" {r['codec']:>10}" for r in results))
    for i, (name, _) in enumerate(rows(first)):
        print(f"{name:<36}" + "".join(f" {rows(r)[i][1]:>10}" for r in results))
    if verbose:
        for r in results:
            print(f"cloud session ({r['codec']}):", json.dumps(r["cloud_stats"], indent=1))
            print(f"relay session ({r['codec']}):", json.dumps(r["relay_stats"], indent=1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--height", type=int, default=720, help="picture height (16:9)")
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--video-bitrate", type=int, default=None, metavar="BPS",
                        help="the cloud's (and relay's) video bitrate ceiling")
    parser.add_argument("--codec", choices=("vp8", "h264", "both"), default="vp8",
                        help="the cloud's --video-codec; both: a session of each, side by side")
    parser.add_argument("--verbose", action="store_true",
                        help="also print the cloud's and the relay's session stats")
    parser.add_argument("--quick", action="store_true",
                        help="360 lines, 15 fps, 2 s: the suite's smoke test")
    args = parser.parse_args(argv)
    if args.quick:
        args.height, args.fps, args.seconds = 360, 15.0, 2.0
    codecs = ["vp8", "h264"] if args.codec == "both" else [args.codec]
    report([asyncio.run(run(args.height, args.fps, args.seconds, args.video_bitrate, codec))
            for codec in codecs], args.verbose)
    return 0


if __name__ == "__main__":
    sys.exit(main())
