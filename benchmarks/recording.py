"""What recording at the relay costs in CPU.

1. Live: the real cloud app and relay on 127.0.0.1 playing `av-sync` (320x240, 24 fps,
   48 kHz stereo) to a receiving peer. The process's CPU time is measured over a window
   without recording, then over an equal window recording through the API; the recorder's
   own worker thread's CPU time is reported too (its encoders run in that thread). All
   three processes' work is in this one process, so the difference is the recording's.
2. Encoder alone: the recorder fed synthetic frames as fast as it takes them, at 320x240
   and 1280x720, 24 fps with audio: CPU seconds per minute of recording.

    .venv/bin/python benchmarks/recording.py [--seconds 20] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("SCOPE_RELAY_ICE_LOOPBACK", "1")

import av
import httpx
import numpy as np
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError
from quick import parse_args  # this folder's (run as a script)

from scope_relay.cloud.app import CloudConfig, create_app
from scope_relay.local.cloud_link.target import CloudTarget
from scope_relay.local.recording.recorder import Recorder
from scope_relay.local.server import RELAY_KEY, RelayConfig, create_relay_app
from scope_relay.media.audio import s16_frame
from scope_relay.protocol.media import VIDEO_TIME_BASE
from scope_relay.rtc.ice import rtc_configuration
from scope_relay.util.serve import serve

#: --quick: one-second windows (and one second of media per encoder-alone size)
QUICK = {"seconds": 1.0}


async def _drain(track) -> None:
    with contextlib.suppress(MediaStreamError):
        while True:
            await track.recv()


async def live(seconds: float) -> None:
    cloud_app = create_app(CloudConfig(loopback_ice=True))
    async with serve(cloud_app, port=0) as cloud:
        relay_app = create_relay_app(RelayConfig(CloudTarget(cloud.ws_url), loopback_ice=True))
        async with serve(relay_app, port=0) as relay, httpx.AsyncClient(
                base_url=relay.url, timeout=120) as http:
            pc = RTCPeerConnection(rtc_configuration())
            pc.addTransceiver("video", direction="recvonly")
            pc.addTransceiver("audio", direction="recvonly")
            pc.createDataChannel("parameters")
            drains: list[asyncio.Task] = []
            pc.on("track", lambda t: drains.append(asyncio.ensure_future(_drain(t))))
            await pc.setLocalDescription(await pc.createOffer())
            answer = (await http.post("/api/v1/webrtc/offer", json={
                "sdp": pc.localDescription.sdp, "type": "offer",
                "initialParameters": {"pipeline_ids": ["av-sync"]}})).json()
            await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))
            await asyncio.sleep(3)  # warm up: first sender reports, steady playout

            start = time.process_time()
            await asyncio.sleep(seconds)
            without = time.process_time() - start

            recording = (await http.post("/api/v1/recordings",
                                         json={"sessionId": answer["sessionId"]})).json()
            start = time.process_time()
            await asyncio.sleep(seconds)
            done = (await http.delete(f"/api/v1/recordings/{recording['recordingId']}")).json()
            with_recording = time.process_time() - start
            session = relay_app[RELAY_KEY].sessions[answer["sessionId"]]
            live_stats = session.stats()
            for task in drains:
                task.cancel()
            await pc.close()

    per_min = 60 / seconds
    print(f"live av-sync 320x240, {seconds:.0f} s windows (cloud + relay + receiver in one process):")
    print(f"  process CPU without recording: {without * per_min:6.1f} s per minute")
    print(f"  process CPU while recording:   {with_recording * per_min:6.1f} s per minute "
          f"(+{(with_recording - without) * per_min:.1f})")
    stats = done["stats"]
    print(f"  recorder worker thread:        {stats['cpu_seconds'] * 60 / done['duration']:6.1f} s "
          f"per minute of recording ({done['duration']:.1f} s recorded, "
          f"{done['size'] / done['duration'] * 8 / 1000:.0f} kbit/s)")
    print(f"  recorder drops: video {stats['video_frames_dropped']}, audio "
          f"{stats['audio_frames_dropped']}; largest queue {stats['max_queue_frames']} frames; "
          f"relay audio underruns {live_stats['audio_underruns']}")


async def encoder_only(width: int, height: int, seconds: float) -> None:
    rng = np.random.default_rng(0)
    # a moving picture (a gradient that scrolls, some noise), not a flat one x264 skips
    ramp = np.add.outer(np.arange(height), np.arange(width)) % 256
    with tempfile.TemporaryDirectory() as tmp:
        recorder = Recorder(Path(tmp) / "bench.mp4", video=True, audio=True)
        recorder.start()
        frames = int(seconds * 24)
        audio = (rng.standard_normal((2, 48_000 * int(seconds) + 960)) * 3000).astype(np.int16)
        for k in range(frames):
            image = (np.stack([ramp + k, ramp * 2 - k, ramp // 2 + k], axis=-1) % 256).astype(np.uint8)
            frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p")
            frame.pts = round(k / 24 * 90_000)
            frame.time_base = VIDEO_TIME_BASE
            while recorder.stats()["queue_frames"] > 32:  # keep pace with the worker
                await asyncio.sleep(0.002)
            recorder.tap_video(frame)
            while recorder.received["audio"] * 960 < (k + 1) * 2000:  # 2000 samples a frame
                i = recorder.received["audio"] * 960
                recorder.tap_audio(s16_frame(audio[:, i:i + 960], i))
        assert not any(recorder.dropped.values()), recorder.dropped
        await recorder.stop()
        size = (Path(tmp) / "bench.mp4").stat().st_size
    print(f"encoder alone {width}x{height} 24 fps + AAC: {recorder.cpu_seconds * 60 / seconds:.1f} "
          f"CPU s per minute of recording ({size / seconds * 8 / 1000:.0f} kbit/s)")


async def main(seconds: float) -> None:
    await live(seconds)
    await encoder_only(320, 240, seconds)
    await encoder_only(1280, 720, seconds)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    asyncio.run(main(parse_args(parser, QUICK).seconds))
