"""The floor for the relay's CPU: one session's media decoded and re-encoded, nothing else.

The relay receives VP8 and Opus from the cloud and sends VP8 and Opus to the browser, so
each session needs at least one decode and one encode of each. This times exactly that,
with the codec objects and settings the relay itself uses (aiortc's VP8 coder, our
libopus coder), on the media of a built-in pipeline, in a tight loop: no RTP, no SRTP, no
event loop, no timing. The relay's own CPU per session divided by this figure is its
overhead (``relay_capacity.py`` prints that ratio).

    .venv/bin/python benchmarks/transcode_floor.py [--pipeline av-sync] [--seconds 10] [--quick]
"""

from __future__ import annotations

import argparse
import sys
import time

import av
import numpy as np
from aiortc.codecs import depayload, get_decoder, get_encoder
from aiortc.jitterbuffer import JitterFrame
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from quick import parse_args  # this folder's (run as a script)

from scope_relay.cloud.hosting.registry import PipelineRegistry
from scope_relay.cloud.pipelines.outputs import as_pipeline_output
from scope_relay.media.audio import s16_frame
from scope_relay.protocol.media import FRAME_SAMPLES, SAMPLE_RATE
from scope_relay.rtc.jitter import AudioUnit
from scope_relay.rtc.opus import MusicOpusEncoder
from scope_relay.rtc.opus_decoder import DecodeStats, LossAwareOpusDecoder

VP8 = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90_000)
#: --quick: one second of media
QUICK = {"seconds": 1.0}


def pipeline_media(pipeline_id: str, seconds: float) -> tuple[list[np.ndarray], np.ndarray, float]:
    """``seconds`` of the pipeline's output: RGB (or 2-D I420) frames, int16 (2, n) audio,
    fps."""
    registry = PipelineRegistry()
    pipeline = registry.get(pipeline_id)("cpu")
    frames: list[np.ndarray] = []
    audio: list[np.ndarray] = []
    fps = float(pipeline.fps or 30.0)
    while len(frames) < seconds * fps:
        out = as_pipeline_output(
            pipeline(None, {k: spec.default for k, spec in pipeline.params.items()}), pipeline)
        assert out is not None, f"{pipeline_id} made nothing on a call"
        if out.video is not None:
            frames.extend(np.asarray(out.video.cpu()))
        if out.audio is not None:
            chunk = np.asarray(out.audio.cpu(), np.float32)
            if out.sample_rate and out.sample_rate != SAMPLE_RATE:  # floor: a plain repeat
                chunk = np.repeat(chunk, SAMPLE_RATE // out.sample_rate, axis=1)
            audio.append(np.clip(chunk * 32767, -32768, 32767).astype(np.int16))
    samples = np.concatenate(audio, axis=1) if audio else np.zeros((2, 0), np.int16)
    return frames[:round(seconds * fps)], samples[:, :round(seconds * SAMPLE_RATE)], fps


def encoded(frames: list[np.ndarray], audio: np.ndarray, fps: float
            ) -> tuple[list[tuple[bytes, int]], list[bytes]]:
    """What the cloud sends: VP8 frames (depacketised) and Opus packets."""
    video_encoder, audio_encoder = get_encoder(VP8), MusicOpusEncoder()
    video = []
    for k, rgb in enumerate(frames):
        frame = av.VideoFrame.from_ndarray(rgb, format="yuv420p" if rgb.ndim == 2 else "rgb24")
        frame.pts = round(k * 90_000 / fps)
        payloads, timestamp = video_encoder.encode(frame)
        video.append((b"".join(depayload(VP8, p) for p in payloads), timestamp))
    packets = []
    for start in range(0, audio.shape[1] - FRAME_SAMPLES + 1, FRAME_SAMPLES):
        payloads, _ = audio_encoder.encode(s16_frame(audio[:, start:start + FRAME_SAMPLES],
                                                     start))
        packets.extend(payloads)
    return video, packets


def transcode_cpu_seconds(video: list[tuple[bytes, int]], audio: list[bytes]) -> float:
    """CPU seconds to decode and re-encode all of it, as the relay's codecs would."""
    video_decoder, video_encoder = get_decoder(VP8), get_encoder(VP8)
    audio_decoder, audio_encoder = LossAwareOpusDecoder(DecodeStats()), MusicOpusEncoder()
    began = time.process_time()
    for data, timestamp in video:
        for frame in video_decoder.decode(JitterFrame(data=data, timestamp=timestamp)):
            video_encoder.encode(frame)
    for k, payload in enumerate(audio):
        for frame in audio_decoder.decode(AudioUnit(k * FRAME_SAMPLES, payload)):
            audio_encoder.encode(frame)
    return time.process_time() - began


def floor_percent(pipeline_id: str = "av-sync", seconds: float = 10.0) -> float:
    """Percent of one core the bare transcode of one session's media takes."""
    frames, audio, fps = pipeline_media(pipeline_id, seconds)
    video, packets = encoded(frames, audio, fps)
    return transcode_cpu_seconds(video, packets) / seconds * 100


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pipeline", default="av-sync")
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parse_args(parser, QUICK)
    print(f"bare transcode of {args.pipeline!r} (VP8 + Opus, decode + re-encode): "
          f"{floor_percent(args.pipeline, args.seconds):.1f} % of one core")
    sys.exit(0)
