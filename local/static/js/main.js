// scope-relay page: one RTCPeerConnection to the local relay that served it. This module owns
// the page's elements and wires them to the other modules; none of them reads the DOM by id.
// What the page says is happening comes from one place (state.js), fed the facts below.
// Plain ES modules, loaded by the browser as they are: no build step.

import { api } from "./api.js";
import { createFigures } from "./figures.js";
import { cloudHop, pageHop } from "./hops.js";
import { icon } from "./icons.js";
import { createMeter } from "./meter.js";
import { createMidi } from "./midi.js";
import { createNotices } from "./notices.js";
import { createOutput } from "./output.js";
import { createOutputsMenu } from "./outputs.js";
import { createRecorder } from "./record.js";
import { setFromController, setParam, showLearnRefused, showLearning, showParams, showRefused } from "./params.js";
import { createSession } from "./session.js";
import { notePlayout } from "./tempo.js";
import { AFTER_RECOVERY, AFTER_RESUME, deriveState, inWords } from "./state.js";

const $ = (id) => document.getElementById(id);
const CLOUD_POLL_MS = 500;  // a cloud going away shows within a second

/** The cloud's pipelines with their capability flags and parameters, once they have loaded. */
let pipelines = [];
/** Everything state.js decides from (see its Facts). */
const facts = {
  phase: "idle", reason: null, connection: null, cloud: null, relayReachable: true, locked: null,
  mediaSeen: false, mediaAgeMs: null, speed: null, pipelineFailed: null, loading: null,
  pipelinesLoaded: false, paused: false, resuming: null,
};
let state = deriveState(facts);
let figures = null;
let summary = null;
/** The relay's last figures for the live session (the raw counters), or null. */
let lastRaw = null;
/** The live session's viewer link (from its figures), or null. */
let shareUrl = null;
/** The chain makes no picture (the stage then says so while muted). */
let audioOnly = false;
/** The relay's count of rebuilt cloud hops for this session, last seen. */
let cloudReconnects = 0;
/** The cloud's status has been other than ready since it was last ready. */
let outage = false;

const output = createOutput($("stage"), $("video"));
const meter = createMeter([$("meter-left"), $("meter-right")]);
const notices = createNotices($("notices"));
const midi = createMidi({
  move: (name, fraction) => setFromController(name, fraction),
  changed: () => showLearning(midi.learning, midi.mapped),
  refused: (name, why) => {  // never silent: on the knob, and in words
    showLearnRefused(name, why);
    notices.show("midi", `MIDI learn for ${name}: ${why}`, { tone: "bad" });
  },
});

const session = createSession({
  phase: (phase, reason = null) => {
    Object.assign(facts, { phase, reason });
    if (phase === "connecting") {
      Object.assign(facts, { mediaSeen: false, mediaAgeMs: null, speed: null, pipelineFailed: null,
                             resuming: null });
      figures = createFigures(selectedRunning() || {});
      cloudReconnects = 0;
      notices.clear("reload");  // a new session loads the pipeline afresh: it says again if not
    }
    render();
    recorder?.sessionChanged();
  },
  play: (stream) => { output.show(stream); meter.attach(stream); },
  track: (track) => output.adopt(track),
  audioOnly: (yes) => { audioOnly = yes; showAudioOnly(); },
  running: (running) => {
    $("start").disabled = running;
    $("stop").disabled = !running;
    if (!running) meter.detach();
  },
  stats: (m, pc) => onFigures(m, pc),
  pipelineFailed: (message) => {
    facts.pipelineFailed = message;
    output.clear();  // no frozen last frame: the reason is shown there instead
    render();
  },
  recordingEnded: (message) => recorder?.ended(message),
  notice: (message) => onNotice(message),
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
  /** MIDI mappings of the shown pipeline, the control waiting to learn, why MIDI failed. */
  get midi() { return { mapping: midi.mapping, learning: midi.learning, error: midi.error }; },
  /** The toasts and banners shown, {key: text}. */
  get notices() { return notices.shown; },
  /** The recording at the relay: {state, recordingId, elapsed, url, duration, error, ended}. */
  get recording() { return recorder.facts; },
  /** The Outputs menu: {ndiId, error, figures}. */
  get outputs() { return outputsMenu.facts; },
});

// Where the performer's tools pick the session up (WHEP, MPEG-TS, WHIP, NDI).
const outputsMenu = createOutputsMenu({
  menu: $("outputs"), summary: $("outputs-summary"), whep: $("out-whep"), ts: $("out-ts"),
  whip: $("out-whip"), ndiName: $("ndi-name"), ndiToggle: $("ndi-toggle"), ndiState: $("ndi-state"),
}, () => (facts.phase === "live" ? session.facts.sessionId : null));

// Record what this page receives, at the relay; only while a session is live.
const recorder = createRecorder({ button: $("record"), elapsed: $("record-elapsed"), link: $("record-link"),
                                  notice: $("record-notice") },
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
  // the strip follows the state at once (an outage blanks it now, not at the next poll)
  showStrip(["connecting", "live", "retrying"].includes(facts.phase) ? summary : null, lastRaw);
  if (output.held !== !!facts.paused) output.hold(!!facts.paused);
  showHint(state);
  showPauseShare();
}

/** A dead end's next step, over the output (where the picture would be). */
function showHint(s) {
  const box = $("hint");
  box.hidden = !s.hint;
  showAudioOnly();
  if (!s.hint) return;
  $("hint-title").textContent = s.hint.title;
  $("hint-detail").textContent = s.detail;
  $("hint-steps").replaceChildren(...s.hint.steps.map(([before, code, after]) => {
    const li = document.createElement("li");
    li.append(before);
    if (code) {
      const c = document.createElement("code");
      c.textContent = code;
      li.append(" ", c);
    }
    if (after) li.append(" ", after);
    return li;
  }));
  $("hint-note").textContent = s.hint.note || "";
}

/** "audio-only pipeline: unmute to listen" only while that is what there is to do. */
function showAudioOnly() {
  $("audio-only").hidden = !(audioOnly && $("video").muted && $("hint").hidden);
}

/** What the relay pushed about the session that is not its state (session.js View.notice). */
function onNotice(message) {
  if (message.type === "parameter_refused") {
    const name = String(message.name ?? "?"), reason = String(message.reason ?? "refused");
    if (!showRefused(name, message.value, reason)) {  // not a control here (OSC, the API)
      notices.show(`refused-${name}`, `The pipeline refused ${name} = ${JSON.stringify(message.value)}: ${reason}`);
    }
  } else if (message.type === "pipeline_reload_failed") {
    notices.show("reload", `${message.pipeline ?? "the pipeline"}: the edited code did not load `
      + `(${message.error ?? "unknown error"}); still running the code it had`, { sticky: true });
  }
}

async function onFigures(m, pc) {
  if (!m) {
    summary = null;
    lastRaw = null;
    shareUrl = null;
    outputsMenu.update(null);
    showStrip(null, null);
    return;
  }
  const report = await pc?.getStats().catch(() => null);
  notePlayout(report);  // the jitter buffer's delay: the beat's compensation (tempo.js)
  if (!figures) return;
  // a rebuilt cloud hop (the cloud crashed, or its hop failed): the outage is no measure of
  // the generator's speed
  if ((Number(m.cloud_reconnects) || 0) !== cloudReconnects) {
    cloudReconnects = Number(m.cloud_reconnects) || 0;
    expectMedia(AFTER_RECOVERY);
  }
  summary = figures.add(m, report ?? null, performance.now());
  if (facts.paused) summary.speed = null;  // no generator speed while it is paused
  Object.assign(facts, { mediaSeen: summary.mediaSeen, mediaAgeMs: summary.mediaAgeMs, speed: summary.speed,
                         resuming: summary.resuming });
  if (m.pipeline_failed) session.fail(String(m.pipeline_failed));
  shareUrl = m.shareUrl || null;
  lastRaw = m;
  outputsMenu.update(m);
  $("share").title = `Open (and copy) a receive-only viewer link: ${m.viewers ?? 0} watching`;
  render();  // (the strip too)
}

const fmt = (x, digits = 0) => x == null || !Number.isFinite(x) ? "—" : x.toFixed(digits);

/** The compact strip in words; the relay's raw counters one click away. Latency, fps, A/V
 * and speed describe media that flows: at any other time they show "—", not the last value. */
function showStrip(s, raw) {
  const set = (id, text, tone = "") => { $(id).textContent = text; $(id).dataset.tone = tone; };
  if (!s || !raw) {
    for (const id of ["fig-latency", "fig-fps", "fig-sync", "fig-bitrate", "fig-speed", "fig-drops"]) set(id, "—");
    $("hops").hidden = true;
    $("stats").textContent = facts.phase === "stopped" ? "stopped: no session" : "no session";
    return;
  }
  const flowing = ["playing", "slow"].includes(state.id);
  set("fig-latency", flowing ? `${fmt(s.latencyMs)} ms` : "—");
  set("fig-fps", s.fps == null || !flowing ? "—" : `${fmt(s.fps)}${s.resolution ? " · " + s.resolution : ""}`);
  set("fig-sync", !flowing ? "—" : s.sync ?? (s.video ? "video only" : "audio only"), flowing && s.sync === "not locked" ? "warn" : "");
  set("fig-bitrate", s.bitrateKbps == null ? "—" : s.bitrateKbps >= 1000
    ? `${fmt(s.bitrateKbps / 1000, 1)} Mbit/s` : `${fmt(s.bitrateKbps)} kbit/s`);
  set("fig-speed", !flowing && s.video && !s.camera ? "—"
    : s.speed != null ? `${fmt(s.speed, 1)}x real time` : s.camera ? "follows the camera" : s.video ? "measuring…" : "n/a (no video)",
      flowing && s.speed != null && s.speed < 0.95 ? "warn" : "");
  const d = s.drops;
  const drops = [d.frames && `${d.frames} frames`, Math.round(d.audioMs) && `${fmt(d.audioMs)} ms audio`,
                 d.underruns && `${d.underruns} underruns`].filter(Boolean);
  set("fig-drops", drops.length ? drops.join(" · ") : "none", drops.length ? "warn" : "");
  showHops(s, raw);
  $("stats").textContent = Object.entries(raw)
    .filter(([, v]) => typeof v !== "object" || v === null)
    .map(([k, v]) => `${k}: ${v}`).join("\n");
}

/** Each hop's video figures (hops.js), one line per hop; none for audio-only pipelines. */
function showHops(s, raw) {
  $("hops").hidden = !s.video;
  if (!s.video) return;
  const cloud = cloudHop(raw);
  fillHop($("hop-cloud"), cloud.figures, cloud.note, cloud.noteTone, cloud.error);
  fillHop($("hop-page"), pageHop(raw, s.pageLoss).figures);
}

function fillHop(dd, figs, note = "", noteTone = "", error = "") {
  const nodes = figs.map((f) => {
    const span = document.createElement("span");
    span.className = "hop-fig";
    span.dataset.fig = f.label;
    span.dataset.tone = f.tone;
    span.title = f.title;
    const label = document.createElement("span");
    label.className = "hop-label";
    label.textContent = f.label;
    span.append(label, f.text);
    return span;
  });
  if (note) {
    const span = document.createElement("span");
    span.className = "hop-note";
    span.dataset.tone = noteTone;
    span.title = error || "the cloud's own figures, read through the relay's control socket at most once a second";
    span.textContent = note;
    nodes.push(span);
  }
  dd.replaceChildren(...nodes);
}

/** Pause (the reserved `paused` parameter) holds the generator; it sticks across reconnects. */
function togglePause() {
  if (!session.facts.pipeline) return;
  facts.paused = !facts.paused;
  setParam("paused", facts.paused);
  figures?.restartSpeed();  // the paused stretch is no measure of the generator's speed
  if (!facts.paused) expectMedia(AFTER_RESUME);  // not a stall: wait for the media to flow again
  render();  // (the output holds, or plays again, here: at the click)
}

/** Media is due again from now (a resume, a recovery): the gap before is no stall. */
function expectMedia(why) {
  if (!figures) return;
  figures.resumed(performance.now(), why);
  if (facts.mediaSeen) Object.assign(facts, { resuming: why, mediaAgeMs: 0, speed: null });
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
  showParams($("params"), p, { onLearn: (name) => midi.learn(name) });  // (says so if MIDI is refused)
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
  showAudioOnly();
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
    if (facts.cloud?.state !== "ready") {
      figures?.restartSpeed();  // an outage is no slowness
      outage = true;
    } else if (outage) {  // back: the relay rebuilds the session's cloud hop
      outage = false;
      if (facts.phase === "live") expectMedia(AFTER_RECOVERY);
    }
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
