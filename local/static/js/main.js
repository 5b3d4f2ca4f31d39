// scope-relay page: one RTCPeerConnection to the local relay that served it. This module owns
// the page's elements and wires them to the other modules; none of them reads the DOM by id.
// Plain ES modules, loaded by the browser as they are: no build step.

import { api } from "./api.js";
import { showParams } from "./params.js";
import { createSession } from "./session.js";

const $ = (id) => document.getElementById(id);
const setStatus = (text) => { $("status").textContent = text; };

/** The cloud's pipelines with their capability flags and parameters, once they have loaded. */
let pipelines = [];

const session = createSession({
  status: setStatus,
  play: (stream) => { $("video").srcObject = stream; },
  audioOnly: (audioOnly) => { $("audio-only").hidden = !audioOnly; },
  running: (running) => {
    $("start").disabled = running;
    $("stop").disabled = !running;
  },
  stats: (text) => { $("stats").textContent = text; },
});

// The test hook, and the page's only global: read-only facts about the live session for the
// browser tests (and for a look from the console). Properties: sessionId, connectionState,
// restarts, localSdp, cameraTrackState; see session.js. Nothing here can change the page.
window.scopeRelay = session.facts;

function selected() {
  return pipelines.find((p) => p.id === $("pipeline").value);
}

/** Shows what the chosen pipeline does and its parameters (at their defaults). */
function showPipeline() {
  const p = selected();
  if (!p) return;
  const flags = [p.produces_video && "video out", p.produces_audio && "audio out", p.accepts_video && "camera in"];
  $("flags").textContent = flags.filter(Boolean).join(" · ");
  showParams($("params"), p);
}

function start() {
  const p = selected();
  if (p) session.start(p);
}

/** Browsers only play sound after a click, so the page starts muted and this is that click. */
function toggleMute() {
  const video = $("video");
  video.muted = !video.muted;
  if (!video.muted) video.play().catch(() => {});
  $("mute").textContent = video.muted ? "Unmute" : "Mute";
  $("mute").setAttribute("aria-pressed", String(video.muted));
}

async function pollCloud() {
  try {
    const s = await api("/api/v1/cloud/status");
    $("cloud-status").textContent = `cloud: ${s.state}${s.last_error ? " (" + s.last_error + ")" : ""}`;
  } catch {
    $("cloud-status").textContent = "cloud: relay unreachable";
  }
}

/** The relay answers for the pipelines only once the cloud app is up: ask until it is. */
async function loadPipelines() {
  for (let attempt = 0; ; attempt++) {
    try {
      return (await api("/api/v1/pipelines")).pipelines;
    } catch (err) {
      setStatus(`Waiting for the cloud app… (${err.message})`);
      await new Promise((r) => setTimeout(r, Math.min(5000, 500 * 2 ** attempt)));
    }
  }
}

async function init() {
  $("start").addEventListener("click", start);
  $("stop").addEventListener("click", () => session.stop());
  $("mute").addEventListener("click", toggleMute);
  $("pipeline").addEventListener("change", showPipeline);
  pollCloud();
  setInterval(pollCloud, 3000);
  pipelines = await loadPipelines();
  for (const p of pipelines) $("pipeline").append(new Option(p.name, p.id));
  showPipeline();
  $("start").disabled = false;
  setStatus("Pick a pipeline and press Start.");
}

init();
