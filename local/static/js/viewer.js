// The receive-only viewer of a shared session (GET /viewer#<share token>): the owner's output
// and nothing else, for another tab, a second screen or a projector. A click goes fullscreen
// (and unmutes: browsers only play sound after a gesture); the cursor stays hidden. No
// controls: a viewer cannot change parameters. It ends when the owner's session ends.

import { api, withTimeout } from "./api.js";
import { preferStereoOpus, waitForIce } from "./session.js";

const JOIN_MS = 30000;
const POLL_MS = 1000;
const video = document.getElementById("video");
const note = document.getElementById("note");
let facts = { state: "connecting", viewerId: null, connectionState: null };

/** What the page says; `text` null hides the note (the picture speaks for itself). */
function show(state, text) {
  facts = { ...facts, state };
  document.body.dataset.state = state;
  note.hidden = text == null;
  note.textContent = text ?? "";
}

/** The relay closes a viewer when the owner's session ends; its figures then 404. */
function watch(pc, viewerId) {
  const timer = setInterval(async () => {
    try {
      await api(`/api/v1/webrtc/viewer/${viewerId}`);
    } catch (err) {
      if (err.status === 404) end(pc, timer, "the shared session has ended");
    }
  }, POLL_MS);
  pc.addEventListener("connectionstatechange", () => {
    facts.connectionState = pc.connectionState;
    if (pc.connectionState === "connected") show("playing", null);
    if (["failed", "closed"].includes(pc.connectionState)) end(pc, timer, "the connection ended");
  });
}

function end(pc, timer, why) {
  clearInterval(timer);
  pc.close();
  show("ended", `${why}: ask for a new link`);
}

async function join(token) {
  const pc = new RTCPeerConnection({ iceServers: [] });
  const stream = new MediaStream();
  video.srcObject = stream;
  pc.addEventListener("track", (event) => stream.addTrack(event.track));
  // both kinds asked for: the relay answers "inactive" for one the pipeline does not make
  pc.addTransceiver("video", { direction: "recvonly" });
  pc.addTransceiver("audio", { direction: "recvonly" });
  const offer = await pc.createOffer();
  await pc.setLocalDescription({ type: "offer", sdp: preferStereoOpus(offer.sdp) });
  await waitForIce(pc);
  const answer = await withTimeout(api("/api/v1/webrtc/viewer", {
    method: "POST",
    body: JSON.stringify({ sdp: pc.localDescription.sdp, type: "offer", shareToken: token }),
  }), JOIN_MS, "joining");
  facts.viewerId = answer.viewerId;
  watch(pc, answer.viewerId);
  await pc.setRemoteDescription({ type: "answer", sdp: answer.sdp });
}

document.addEventListener("click", () => {
  video.muted = false;
  video.play().catch(() => {});
  if (!document.fullscreenElement) document.documentElement.requestFullscreen?.().catch(() => {});
});

// The test hook: read-only facts about this viewer.
window.scopeRelayViewer = Object.freeze({ get facts() { return { ...facts }; } });

const token = decodeURIComponent(location.hash.slice(1));
if (!token) {
  show("failed", "this link has no share token");
} else {
  join(token).catch((err) => show("failed", `could not join: ${err.message}`));
}
