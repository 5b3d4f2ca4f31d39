// scope-relay page: one RTCPeerConnection to the local relay. Which transceivers exist is
// decided by the pipeline's capability flags, read from the cloud's registry via the API.
"use strict";

const $ = (id) => document.getElementById(id);
const state = {
  pipelines: [], pc: null, channel: null, sessionId: null, camera: null, statsTimer: null,
  wanted: null,      // the pipeline the user started and has not stopped
  params: {},        // parameters set on the page, restored on every (re)connect
  connectedOnce: false, attempts: 0, restarts: 0, restartTimer: null, missing: 0,
  disconnectTimer: null,
  attempt: 0,        // bumped by every teardown: an older connect() in flight is then stale
};

class Stale extends Error {}

// Errors no retry can fix: the relay refused the request itself, or the camera was denied.
function isPermanent(err) {
  if (err.name === "NotAllowedError" || err.name === "NotFoundError") return true;
  return err.status >= 400 && err.status < 500 && ![408, 429].includes(err.status);
}

async function api(path, options = {}) {
  const response = await fetch(path, { headers: { "Content-Type": "application/json" }, ...options });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const err = new Error(body.error || body.detail || `${response.status} ${response.statusText}`);
    err.status = response.status;
    throw err;
  }
  return body;
}

function withTimeout(promise, ms, what) {
  return Promise.race([promise, new Promise((_, reject) =>
    setTimeout(() => reject(new Error(`${what} timed out after ${ms / 1000} s`)), ms))]);
}

function setStatus(text) { $("status").textContent = text; }

function selected() { return state.pipelines.find((p) => p.id === $("pipeline").value); }

function showFlags() {
  const p = selected();
  if (!p) return;
  state.params = {};  // another pipeline: its own defaults, not the last one's settings
  const flags = [p.produces_video && "video out", p.produces_audio && "audio out", p.accepts_video && "camera in"];
  $("flags").textContent = flags.filter(Boolean).join(" · ");
  renderParams(p);
}

function renderParams(p) {
  const box = $("params");
  box.replaceChildren();
  for (const [name, spec] of Object.entries(p.params || {})) {
    if (!["number", "integer", "prompts"].includes(spec.type)) continue;
    const label = document.createElement("label");
    label.textContent = name;
    const input = document.createElement("input");
    input.name = name;
    if (spec.type === "prompts") {
      input.value = (spec.default || []).map((x) => x.text).join(", ");
    } else {
      input.type = "number"; input.step = "any"; input.value = spec.default;
    }
    input.title = spec.description || "";
    input.addEventListener("change", () => sendParameter(name, spec, input.value));
    label.append(input);
    box.append(label);
  }
}

function sendParameter(name, spec, raw) {
  const value = spec.type === "prompts" ? [{ text: raw, weight: 1 }] : Number(raw);
  state.params[name] = value;
  if (!state.channel || state.channel.readyState !== "open") return;
  state.channel.send(JSON.stringify({ [name]: value }));
}

// Chromium decodes Opus as mono unless its own description asks for stereo.
function preferStereoOpus(sdp) {
  const match = sdp.match(/a=rtpmap:(\d+) opus\/48000\/2/i);
  if (!match) return sdp;
  const fmtp = new RegExp(`(a=fmtp:${match[1]} [^\r\n]*)`);
  return sdp.replace(fmtp, (line) => line.includes("stereo=1") ? line : `${line};stereo=1;sprop-stereo=1`);
}

async function waitForIce(pc) {
  if (pc.iceGatheringState === "complete") return;
  await withTimeout(new Promise((resolve) => {
    pc.addEventListener("icegatheringstatechange", () => {
      if (pc.iceGatheringState === "complete") resolve();
    });
  }), 3000, "ICE gathering").catch(() => {}); // send what we have: candidates may trickle
}

async function start() {
  const p = selected();
  if (!p) return;
  Object.assign(state, { wanted: p, connectedOnce: false, attempts: 0 });
  $("start").disabled = true;
  $("stop").disabled = false;
  await connect(p);
}

// One session with the relay. Which transceivers exist follows the pipeline's flags.
async function connect(p) {
  const attempt = ++state.attempt;
  const check = () => { if (attempt !== state.attempt) throw new Stale("superseded"); };
  let pc = null, camera = null, sessionId = null;
  setStatus(`Starting ${p.name}…`);
  try {
    pc = new RTCPeerConnection({ iceServers: [] });
    state.pc = pc;
    const stream = new MediaStream();
    $("video").srcObject = stream;
    pc.addEventListener("track", (event) => stream.addTrack(event.track));
    pc.addEventListener("connectionstatechange", () => onConnectionState(pc));
    if (p.accepts_video) {
      camera = await withTimeout(navigator.mediaDevices.getUserMedia({ video: true }), 15000, "camera");
      check();
      state.camera = camera;
      pc.addTransceiver(camera.getVideoTracks()[0], { direction: p.produces_video ? "sendrecv" : "sendonly" });
    } else if (p.produces_video) {
      pc.addTransceiver("video", { direction: "recvonly" });
    }
    if (p.produces_audio) pc.addTransceiver("audio", { direction: "recvonly" });
    state.channel = pc.createDataChannel("parameters", { ordered: true });
    $("audio-only").hidden = p.produces_video;
    const offer = await pc.createOffer();
    await pc.setLocalDescription({ type: "offer", sdp: preferStereoOpus(offer.sdp) });
    await waitForIce(pc);
    check();
    const answer = await withTimeout(api("/api/v1/webrtc/offer", {
      method: "POST",
      body: JSON.stringify({ sdp: pc.localDescription.sdp, type: "offer",
                             initialParameters: { ...state.params, pipeline_ids: [p.id] } }),
    }), 120000, "offer");
    sessionId = answer.sessionId;
    check();
    state.sessionId = sessionId;
    await pc.setRemoteDescription({ type: "answer", sdp: answer.sdp });
    check();
    state.missing = 0;
    state.statsTimer = setInterval(showStats, 1000);
  } catch (err) {
    if (attempt !== state.attempt) {  // Stop or a newer attempt took over: undo only ours
      if (pc) pc.close();
      if (camera) camera.getTracks().forEach((t) => t.stop());
      if (sessionId) fetch(`/api/v1/webrtc/offer/${sessionId}`, { method: "DELETE" }).catch(() => {});
      return;
    }
    await teardown();
    if (state.connectedOnce && !isPermanent(err)) {
      scheduleRestart(err.message);
    } else {  // never worked, or cannot work: say why and let the user choose
      await stop();
      setStatus(`Could not start: ${err.message}`);
    }
  }
}

function onConnectionState(pc) {
  if (pc !== state.pc) return;
  setStatus(`Connection: ${pc.connectionState}`);
  clearTimeout(state.disconnectTimer);
  if (pc.connectionState === "connected") {
    Object.assign(state, { attempts: 0, connectedOnce: true });
  } else if (pc.connectionState === "failed") {
    scheduleRestart("connection failed");
  } else if (pc.connectionState === "disconnected") {
    // a Wi-Fi blip often heals by itself within seconds; past that, start a new session
    state.disconnectTimer = setTimeout(() => {
      if (pc === state.pc && pc.connectionState === "disconnected") scheduleRestart("connection lost");
    }, 5000);
  }
}

// aiortc (the relay) has no ICE restart: recovery is a new session, same pipeline and
// parameters, with backoff, until it works or the user presses Stop.
function scheduleRestart(reason) {
  if (!state.wanted || state.restartTimer) return;
  const delay = Math.min(10000, 1000 * 2 ** state.attempts++);
  setStatus(`Reconnecting in ${delay / 1000} s (${reason})…`);
  teardown();
  state.restartTimer = setTimeout(async () => {
    state.restartTimer = null;
    if (!state.wanted) return;
    state.restarts += 1;
    await connect(state.wanted);
  }, delay);
}

async function teardown() {
  state.attempt += 1;  // a connect() still in flight is now stale and undoes itself
  clearInterval(state.statsTimer);
  clearTimeout(state.disconnectTimer);
  const { pc, sessionId, camera } = state;
  Object.assign(state, { pc: null, channel: null, sessionId: null, camera: null });
  if (pc) pc.close();
  if (camera) camera.getTracks().forEach((t) => t.stop());
  if (sessionId) {
    await fetch(`/api/v1/webrtc/offer/${sessionId}`, { method: "DELETE" }).catch(() => {});
  }
}

async function stop() {
  state.wanted = null;
  clearTimeout(state.restartTimer);
  state.restartTimer = null;
  await teardown();
  $("start").disabled = false;
  $("stop").disabled = true;
}

async function showStats() {
  const sessionId = state.sessionId;
  try {
    const stats = await api("/api/v1/stats");
    const mine = stats.sessions.find((s) => s.sessionId === sessionId);
    // the relay no longer has our session (it was restarted, or ended it): start anew
    state.missing = mine || sessionId !== state.sessionId ? 0 : state.missing + 1;
    if (state.missing >= 2) {
      scheduleRestart("the relay ended the session");
      return;
    }
    const keys = ["connection", "offset_ms", "playout_delay_ms", "audio_queue_ms", "video_queue_ms",
                  "audio_frames_sent", "video_frames_sent"];
    // every drop the relay counts, shown once it is non-zero
    const drops = ["audio_underruns", "audio_late_ms", "audio_overflow_ms", "audio_reset_ms",
                   "audio_gap_ms", "audio_startup_skipped_ms", "video_late_frames", "video_overflow_frames",
                   "pending_dropped", "clipped_samples", "nonfinite_samples", "camera_frames_dropped",
                   "parameters_dropped", "bad_parameter_messages", "cloud_reconnects",
                   "tracks_timed_by_arrival"];
    const lines = keys.filter((k) => k in (mine || {})).map((k) => `${k}: ${mine[k]}`);
    lines.push(...drops.filter((k) => mine?.[k]).map((k) => `${k}: ${mine[k]}`));
    if (state.restarts) lines.push(`reconnects: ${state.restarts}`);
    $("stats").textContent = lines.join("\n");
  } catch (err) {
    $("stats").textContent = err.message;  // relay unreachable: maybe restarting
    if (sessionId === state.sessionId && ++state.missing >= 5) scheduleRestart("relay unreachable");
  }
}

async function pollCloud() {
  try {
    const s = await api("/api/v1/cloud/status");
    $("cloud-status").textContent = `cloud: ${s.state}${s.last_error ? " (" + s.last_error + ")" : ""}`;
  } catch (err) { $("cloud-status").textContent = "cloud: relay unreachable"; }
}

function toggleMute() {
  const video = $("video");
  video.muted = !video.muted;
  if (!video.muted) video.play().catch(() => {});
  $("mute").textContent = video.muted ? "Unmute" : "Mute";
  $("mute").setAttribute("aria-pressed", String(video.muted));
}

async function init() {
  $("start").addEventListener("click", start);
  $("stop").addEventListener("click", stop);
  $("mute").addEventListener("click", toggleMute);
  $("pipeline").addEventListener("change", showFlags);
  pollCloud();
  setInterval(pollCloud, 3000);
  for (let attempt = 0; ; attempt++) {
    try {
      state.pipelines = (await api("/api/v1/pipelines")).pipelines;
      break;
    } catch (err) {
      setStatus(`Waiting for the cloud app… (${err.message})`);
      await new Promise((r) => setTimeout(r, Math.min(5000, 500 * 2 ** attempt)));
    }
  }
  for (const p of state.pipelines) $("pipeline").append(new Option(p.name, p.id));
  showFlags();
  $("start").disabled = false;
  setStatus("Pick a pipeline and press Start.");
}

init();
