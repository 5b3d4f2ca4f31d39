"""The cloud's video rate fits the picture (rtc/video_encoder.py), end to end: the real
cloud app, relay and a receiver streaming ``hd-test``, every frame matched to its source
by the number drawn in it."""

from __future__ import annotations

import asyncio

import httpx

from scope_relay.cloud.builtin_pipelines.hd_test import frame_size
from scope_relay.rtc.video_encoder import default_video_bitrate
from scope_relay.testing import frame_number, stream_pipeline


async def session_stats(url: str) -> dict:
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        sessions = (await http.get("/api/v1/stats")).json()["sessions"]
    assert len(sessions) == 1
    return sessions[0]


async def test_hd_test_streams_numbered_frames_at_a_rate_that_fits_the_picture():
    fps = 15.0
    async with stream_pipeline("hd-test", parameters={"height": 360, "frame_rate": fps}) as s:
        frames = await s.wait_video(20, timeout=30)
        width, height = frame_size(360)
        assert frames[-1].shape == (height, width, 3)
        numbers = [frame_number(f) for f in frames]
        assert None not in numbers and numbers == sorted(numbers), numbers

        relay0 = (await session_stats(s.relay.url))["receive"]["video"]["payload_bytes"]
        began = asyncio.get_running_loop().time()
        await s.wait_video(round(2 * fps), timeout=30)  # ~2 s of pictures
        relay1 = (await session_stats(s.relay.url))["receive"]["video"]["payload_bytes"]
        elapsed = asyncio.get_running_loop().time() - began
        sent = (await session_stats(s.cloud.url))["video_send"]
        async with httpx.AsyncClient(timeout=10) as http:
            metrics = (await http.get(f"{s.cloud.url}/metrics")).text

    target = default_video_bitrate(width, height, fps)
    assert sent["ceiling_bitrate"] == target  # the frame rate read from the timestamps
    assert sent["target_bitrate"] <= target
    assert sent["keyframes"] >= 1 and sent["encoded_bytes"] > 0
    assert "video_send_target_bitrate" in metrics and "video_send_plis" in metrics
    rate = (relay1 - relay0) * 8 / elapsed  # what crossed the cloud hop
    assert 0.2 * target < rate < 2 * target, (rate, target)
