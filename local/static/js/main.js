// scope-relay page: one RTCPeerConnection to the local relay that served it. This module owns
// the page's elements and wires them to the other modules; none of them reads the DOM by id.
// What the page says is happening comes from one place (state.js), fed the facts below.
// Plain ES modules, loaded by the browser as they are: no build step.

import { api } from "./api.js";
import { createFigures } from "./figures.js";
import { icon } from "./icons.js";
import { createMeter } from "./meter.js";
import { createMidi } from "./midi.js";
import { createOutput } from "./output.js";
import { createRecorder } from "./record.js";
import { setFromController, setParam, showLearning, showParams } from "./params.js";
import { createSession } from "./session.js";
import { deriveState, inWords } from "./state.js";

const $ = (id) => document.getElementById(id);
const CLOUD_POLL_MS = 500;  // a cloud going away shows within a second

/** The cloud's pipelines with their capability flags and parameters, once they have loaded. */
let pipelines = [];
/** Everything state.js decides from (see its Facts). */
const facts = {
  phase: "idle", reason: null, connection: null, cloud: null, relayReachable: true, locked: null,
  mediaSeen: false, mediaAgeMs: null, speed: null, pipelineFailed: null, loading: null,
  pipelinesLoaded: false,
};
let state = deriveState(facts);
let figures = null;
let summary = null;
/** The live session's viewer link (from its figures), or null. */
let shareUrl = null;

const output = createOutput($("stage"), $("video"));
const meter = createMeter([$("meter-left"), $("meter-right")]);
const midi = createMidi({
  move: (name, fraction) => setFromController(name, fraction),
  changed: () => showLearning(midi.learning, midi.mapped),
});

const session = createSession({
  phase: (phase, reason = null) => {
    Object.assign(facts, { phase, reason });
    if (phase === "connecting") Object.assign(facts, { mediaSeen: false, mediaAgeMs: null,
                                                       speed: null, pipelineFailed: null });
    if (phase === "connecting") figures = createFigures(selectedRunning() || {});
    if (phase === "connecting") showNotice(null);
    render();
    recorder?.sessionChanged();
  },
  play: (stream) => { output.show(stream); meter.attach(stream); },
  audioOnly: (audioOnly) => { $("audio-only").hidden = !audioOnly; },
  running: (running) => {
    $("start").disabled = running;
    $("stop").disabled = !running;
    if (!running) meter.detach();
  },
  stats: (m, pc) => onFigures(m, pc),
  pipelineFailed: (message) => { facts.pipelineFailed = message; render(); },
  notice: (text) => showNotice(text),
  echoCancellation: () => $("echo").checked,
});

// The test hook, and the page's only global: read-only facts for the browser tests (and for
// a look from the console). Nothing here can change the page.
window.scopeRelay = Object.freeze({
  get sessionId() { return session.facts.sessionId; },
  get connectionState() { return session.facts.connectionState; },
  get restarts() { return session.facts.restarts; },
  get localSdp() { return session.facts.localSdp; },
  get cameraTrackState() { return session.facts.cameraTrackState; },
  /** The running pipeline's id, or null. */
  get pipeline() { return session.facts.pipeline; },
  /** state.js's verdict: {id, title, detail, tone}. */
  get state() { return { ...state }; },
  /** The stats strip's figures (speed, fps, latencyMs, ...), or null when stopped. */
  get figures() { return summary && { ...summary }; },
  /** The level meter's [left, right], 0..1. */
  get levels() { return meter.levels; },
  /** MIDI mappings of the shown pipeline, and the control waiting to learn. */
  get midi() { return { mapping: midi.mapping, learning: midi.learning }; },
  /** The recording at the relay: {state, recordingId, elapsed, url, duration, error}. */
  get recording() { return recorder.facts; },
});

// Record what this page receives, at the relay; only while a session is live.
const recorder = createRecorder({ button: $("record"), elapsed: $("record-elapsed"), link: $("record-link") },
                                () => (facts.phase === "live" ? session.facts.sessionId : null));

function selected() {
  return pipelines.find((p) => p.id === $("pipeline").value);
}

function selectedRunning() {
  return pipelines.find((p) => p.id === session.facts.pipeline) || selected();
}

/** Puts state.js's verdict on the page: the badge, and a data attribute CSS can use. */
function render() {
  facts.connection = session.facts.connectionState;
  state = deriveState(facts);
  const badge = $("status");
  badge.dataset.tone = state.tone;
  document.body.dataset.state = state.id;
  $("state-title").textContent = state.title;
  $("state-detail").textContent = state.detail;
  const loading = state.id === "loading" && facts.loading;
  $("progress").hidden = !loading;
  if (loading) $("progress").value = facts.loading.fraction ?? 0;
  const c = facts.cloud;
  $("cloud-status").textContent = !facts.relayReachable ? "relay unreachable"
    : !c ? "cloud …" : `cloud ${c.state}${c.state !== "ready" && c.last_error ? ": " + inWords(c.last_error) : ""}`;
  $("cloud-status").dataset.tone = !facts.relayReachable || ["refused", "error", "reconnecting", "closed"]
    .includes(c?.state) ? "bad" : c?.state === "ready" ? "ok" : "busy";
  if (!["connecting", "live", "retrying"].includes(facts.phase)) showStrip(null, null);
  showPauseShare();
}

async function onFigures(m, pc) {
  if (!m) {
    summary = null;
    shareUrl = null;
    showStrip(null, null);
    return;
  }
  const report = await pc?.getStats().catch(() => null);
  if (!figures) return;
  summary = figures.add(m, report ?? null, performance.now());
  if (facts.paused) summary.speed = null;  // no generator speed while it is paused
  Object.assign(facts, { mediaSeen: summary.mediaSeen, mediaAgeMs: summary.mediaAgeMs, speed: summary.speed });
  if (m.pipeline_failed) facts.pipelineFailed = String(m.pipeline_failed);
  shareUrl = m.shareUrl || null;
  $("share").title = `Open (and copy) a receive-only viewer link: ${m.viewers ?? 0} watching`;
  render();
  showStrip(summary, m);
}

const fmt = (x, digits = 0) => x == null || !Number.isFinite(x) ? "—" : x.toFixed(digits);

/** The compact strip in words; the relay's raw counters one click away. */
function showStrip(s, raw) {
  const set = (id, text, tone = "") => { $(id).textContent = text; $(id).dataset.tone = tone; };
  if (!s) {
    for (const id of ["fig-latency", "fig-fps", "fig-sync", "fig-bitrate", "fig-speed", "fig-drops"]) set(id, "—");
    $("stats").textContent = facts.phase === "stopped" ? "stopped: no session" : "no session";
    return;
  }
  set("fig-latency", `${fmt(s.latencyMs)} ms`);
  set("fig-fps", s.fps == null ? "—" : `${fmt(s.fps)}${s.resolution ? " · " + s.resolution : ""}`);
  set("fig-sync", s.sync ?? (s.video ? "video only" : "audio only"), s.sync === "not locked" ? "warn" : "");
  set("fig-bitrate", s.bitrateKbps == null ? "—" : s.bitrateKbps >= 1000
    ? `${fmt(s.bitrateKbps / 1000, 1)} Mbit/s` : `${fmt(s.bitrateKbps)} kbit/s`);
  set("fig-speed", s.speed != null ? `${fmt(s.speed, 1)}x real time` : s.camera ? "follows the camera" : s.video ? "measuring…" : "n/a (no video)",
      s.speed != null && s.speed < 0.95 ? "warn" : "");
  const d = s.drops;
  const drops = [d.frames && `${d.frames} frames`, Math.round(d.audioMs) && `${fmt(d.audioMs)} ms audio`,
                 d.underruns && `${d.underruns} underruns`].filter(Boolean);
  set("fig-drops", drops.length ? drops.join(" · ") : "none", drops.length ? "warn" : "");
  $("stats").textContent = Object.entries(raw)
    .filter(([, v]) => typeof v !== "object" || v === null)
    .map(([k, v]) => `${k}: ${v}`).join("\n");
}

/** Pause (the reserved `paused` parameter) holds the generator; it sticks across reconnects. */
function togglePause() {
  if (!session.facts.pipeline) return;
  facts.paused = !facts.paused;
  setParam("paused", facts.paused);
  figures?.restartSpeed();  // the paused stretch is no measure of the generator's speed
  render();
}

/** Opens the receive-only viewer of this session in a new tab and copies its link. */
function share() {
  if (!shareUrl) return;
  navigator.clipboard?.writeText(shareUrl).catch(() => {});
  window.open(shareUrl, "_blank", "noopener");
}

function showPauseShare() {
  const running = !!session.facts.pipeline;
  $("pause").disabled = !running;
  $("pause").setAttribute("aria-pressed", String(!!facts.paused));
  $("pause").innerHTML = `${icon(facts.paused ? "play" : "pause")}<span>${facts.paused ? "Resume" : "Pause"}</span>`;
  $("share").disabled = !(running && shareUrl && facts.phase === "live");
}

/** Shows what the chosen pipeline does and its parameters (at their defaults). */
function showPipeline() {
  const p = selected();
  if (!p) return;
  const flags = [p.produces_video && "video out", p.produces_audio && "audio out", p.accepts_video && "camera in",
                 p.accepts_audio && "microphone in"];
  $("echo-field").hidden = !p.accepts_audio;
  $("flags").textContent = flags.filter(Boolean).join(" · ");
  showParams($("params"), p, { onLearn: midi.available ? (name) => midi.learn(name) : undefined });
  facts.paused = false;  // (the shown pipeline's values start afresh, unpaused)
  midi.load(p.id);
}

/** Picking a pipeline while streaming restarts the session on it, in one action. */
function onPick() {
  showPipeline();
  const p = selected();
  if (p && session.facts.pipeline && session.facts.pipeline !== p.id) session.start(p);
}

function start() {
  const p = selected();
  if (p) session.start(p);
}

function toggleRun() {
  if (session.facts.pipeline) session.stop(); else start();
}

/** Browsers only play sound after a click, so the page starts muted and this is that click. */
function toggleMute() {
  const video = $("video");
  video.muted = !video.muted;
  if (!video.muted) video.play().catch(() => {});
  $("mute").innerHTML = `${icon(video.muted ? "mute" : "sound")}<span>${video.muted ? "Unmute" : "Mute"}</span>`;
  $("mute").setAttribute("aria-pressed", String(!video.muted));
}

/** Space start/stop, m mute, f fullscreen, p pop-out; not while typing into a field. */
function onKey(event) {
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  const t = event.target instanceof HTMLElement ? event.target : null;
  const typing = t && (t.closest("input[type=text], input[type=number], textarea, select") || t.isContentEditable);
  // Space also presses a focused button or toggle: leave it to them
  if (typing || (event.key === " " && t?.closest("button, input"))) return;
  const actions = { " ": toggleRun, m: toggleMute, f: output.toggleFullscreen, p: output.openPopout,
                    ".": togglePause };
  const action = actions[event.key.toLowerCase()];
  if (!action) return;
  event.preventDefault();
  if (event.key === " " && $("start").disabled && !session.facts.pipeline) return;  // not loaded yet
  action();
}

async function pollCloud() {
  try {
    facts.cloud = await api("/api/v1/cloud/status");
    facts.relayReachable = true;
    facts.locked = null;
  } catch (err) {
    facts.relayReachable = err.status !== undefined;  // an HTTP answer means it is there
    facts.locked = err.status === 401 ? err.message : null;  // on the LAN, without the token
  }
  if (facts.phase === "connecting" && facts.cloud?.state === "ready") {
    try {
      const status = await api("/api/v1/pipeline/status");
      facts.loading = status.progress || (status.status === "loading" ? { phase: "loading" } : null);
      if (status.device) $("device").textContent = `· runs on ${status.device}`;
    } catch {
      facts.loading = null;
    }
  } else if (facts.phase !== "connecting") {
    facts.loading = null;
  }
  render();
}

/** The relay answers for the pipelines only once the cloud app is up: ask until it is. */
async function loadPipelines() {
  for (let attempt = 0; ; attempt++) {
    try {
      return await api("/api/v1/pipelines");
    } catch {  // the badge already says why (the cloud's status, polled)
      await new Promise((r) => setTimeout(r, Math.min(5000, 500 * 2 ** attempt)));
    }
  }
}

/** What the cloud said about this session (a refused value, a reload that failed): the
 * latest one, until the next session starts. */
function showNotice(text) {
  $("notice").hidden = !text;
  $("notice").textContent = text || "";
}

/** Plugins the cloud could not load are named, not silently missing from the picker. */
function showFailedPlugins(failed) {
  const box = $("plugin-errors");
  box.hidden = !failed?.length;
  box.replaceChildren(...(failed || []).map((f) => {
    const li = document.createElement("li");
    li.textContent = `${f.source}: ${f.error}`;
    return li;
  }));
}

async function init() {
  for (const [id, name] of [["start", "play"], ["stop", "stop"], ["mute", "mute"],
                            ["fullscreen", "fullscreen"], ["popout", "popout"], ["share", "share"]]) {
    $(id).insertAdjacentHTML("afterbegin", icon(name));
  }
  $("start").addEventListener("click", start);
  $("stop").addEventListener("click", () => session.stop());
  $("mute").addEventListener("click", toggleMute);
  $("fullscreen").addEventListener("click", output.toggleFullscreen);
  $("popout").addEventListener("click", output.openPopout);
  $("pause").addEventListener("click", togglePause);
  $("share").addEventListener("click", share);
  $("pipeline").addEventListener("change", onPick);
  document.addEventListener("keydown", onKey);
  render();
  pollCloud();
  setInterval(pollCloud, CLOUD_POLL_MS);
  const listing = await loadPipelines();
  pipelines = listing.pipelines;
  showFailedPlugins(listing.failed);
  for (const p of pipelines) $("pipeline").append(new Option(p.name, p.id));
  showPipeline();
  $("start").disabled = false;
  facts.pipelinesLoaded = true;
  render();
}

init();
