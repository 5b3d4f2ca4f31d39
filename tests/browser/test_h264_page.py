"""Debian's Chromium plays 720p and 1080p H.264 from the relay: the real ``scope-relay cloud
--video-codec h264`` and ``scope-relay local`` processes, a peer connection made in the
page (as the page's own session code does: candidates inside the offer), the picture on a
``<video>``, the codec read back from ``getStats``."""

from __future__ import annotations

import pytest

from helpers.chromium import needs_chromium, page_at
from helpers.processes import cloud_process, relay_process

pytestmark = [
    pytest.mark.browser,
    needs_chromium,
    pytest.mark.asyncio(loop_scope="module"),
]

#: a receive-only peer in the page, offered to the relay for ``hd-test`` at 720p
PLAY = """async ({height, fps}) => {
  const pc = new RTCPeerConnection({iceServers: []});
  window.h264pc = pc;
  pc.addTransceiver("video", {direction: "recvonly"});
  const video = document.createElement("video");
  video.muted = true; video.autoplay = true; video.playsInline = true;
  document.body.appendChild(video);
  window.h264video = video;
  pc.ontrack = (e) => { video.srcObject = new MediaStream([e.track]); video.play(); };
  await pc.setLocalDescription(await pc.createOffer());
  if (pc.iceGatheringState !== "complete") {
    await new Promise((resolve) => pc.addEventListener("icegatheringstatechange",
      () => pc.iceGatheringState === "complete" && resolve()));
  }
  const response = await fetch("/api/v1/webrtc/offer", {method: "POST",
    headers: {"Content-Type": "application/json"},
    body: JSON.stringify({sdp: pc.localDescription.sdp, type: "offer",
      initialParameters: {pipeline_ids: ["hd-test"], height, frame_rate: fps}})});
  const answer = await response.json();
  if (!response.ok) return answer;
  await pc.setRemoteDescription({type: "answer", sdp: answer.sdp});
  window.h264decoded = 0;  // frames decoded, as getStats said last (every 200 ms)
  setInterval(async () => {
    (await pc.getStats()).forEach((s) => {
      if (s.type === "inbound-rtp" && s.kind === "video") window.h264decoded = s.framesDecoded || 0;
    });
  }, 200);
  return {ok: true};
}"""

#: what the page's receiver says: size, frames decoded, the inbound codec
INBOUND = """async () => {
  const stats = await window.h264pc.getStats();
  let inbound = null;
  stats.forEach((s) => { if (s.type === "inbound-rtp" && s.kind === "video") inbound = s; });
  const codec = inbound && inbound.codecId ? stats.get(inbound.codecId) : null;
  return {width: window.h264video.videoWidth, height: window.h264video.videoHeight,
          decoded: inbound ? inbound.framesDecoded || 0 : 0,
          codec: codec ? codec.mimeType : null,
          fmtp: codec ? codec.sdpFmtpLine || "" : ""};
}"""


@pytest.mark.parametrize("height,width", [(720, 1280), (1080, 1920)])
async def test_chromium_plays_hd_h264_from_the_relay(browser, height, width):
    """720p, and 1080p: libx264 writes level 4.0 in the SPS under the SDP's 3.1
    (``42e01f``/``42001f``, aiortc's only H.264 entries), which Chromium decodes."""
    async with cloud_process("--video-codec", "h264") as cloud, relay_process(cloud) as relay:
        async with page_at(browser, relay.url) as page:
            started = await page.evaluate(PLAY, {"height": height, "fps": 15})
            assert started == {"ok": True}, started
            await page.wait_for_function(
                "window.h264video.videoWidth > 0", timeout=60_000)
            first = await page.evaluate(INBOUND)
            await page.wait_for_function("(before) => window.h264decoded >= before + 30",
                                         arg=first["decoded"], timeout=60_000)
            last = await page.evaluate(INBOUND)
            assert (last["width"], last["height"]) == (width, height), last
            assert last["codec"] == "video/H264", last
            assert "packetization-mode=1" in last["fmtp"], last
            assert last["decoded"] >= first["decoded"] + 30
            assert not page.errors, page.errors
