// One session at a time with the relay: camera, offer and answer, media, and recovery.
// Which transceivers exist follows the pipeline's capability flags. aiortc (the relay) has no
// ICE restart, so recovery is a new session on the same pipeline with the same parameters,
// with backoff, until it works or the user presses Stop.

import { api, endSession, withTimeout } from "./api.js";
import { initialParameters, useChannel } from "./params.js";
import { watchStats } from "./stats.js";

const CAMERA_MS = 15000;     // the permission prompt included
const OFFER_MS = 120000;     // the cloud may have to load the pipeline before it answers
const ICE_MS = 3000;         // gathering past this: the offer goes with what it has
const HEAL_MS = 5000;        // a Wi-Fi blip often heals by itself within seconds
const MAX_BACKOFF_MS = 10000;

/** Thrown inside connect() once a teardown has made that attempt stale. */
class Stale extends Error {}

/** Errors no retry can fix: the relay refused the request itself, or the camera was denied. */
function isPermanent(err) {
  if (err.name === "NotAllowedError" || err.name === "NotFoundError") return true;
  return err.status >= 400 && err.status < 500 && ![408, 429].includes(err.status);
}

/** Chromium decodes Opus as mono unless its own description asks for stereo. */
export function preferStereoOpus(sdp) {
  const match = sdp.match(/a=rtpmap:(\d+) opus\/48000\/2/i);
  if (!match) return sdp;
  const fmtp = new RegExp(`(a=fmtp:${match[1]} [^\r\n]*)`);
  return sdp.replace(fmtp, (line) => line.includes("stereo=1") ? line : `${line};stereo=1;sprop-stereo=1`);
}

/** The page sends its candidates only inside the offer, so let gathering finish first. */
export async function waitForIce(pc) {
  if (pc.iceGatheringState === "complete") return;
  await withTimeout(new Promise((resolve) => {
    pc.addEventListener("icegatheringstatechange", () => {
      if (pc.iceGatheringState === "complete") resolve();
    });
  }), ICE_MS, "ICE gathering").catch(() => {});
}

/**
 * What the session needs from the page, so this module knows no element ids.
 * @typedef {object} View
 * @property {(phase: string, reason?: string|null) => void} phase  idle, connecting, live,
 *   retrying, stopped or failed (with why): state.js turns it into words
 * @property {(stream: MediaStream) => void} play  the stream the relay's tracks arrive on
 * @property {(audioOnly: boolean) => void} audioOnly  no picture will come: say so
 * @property {(running: boolean) => void} running  started (Stop makes sense) or not (Start does)
 * @property {(figures: object|null, pc: RTCPeerConnection|null) => void} stats  the relay's
 *   figures for this session (null: none any more), with the peer for the browser's own
 * @property {(message: string) => void} pipelineFailed  the cloud says the pipeline failed
 * @property {() => boolean} [echoCancellation]  whether the microphone asks for echo
 *   cancellation (default true)
 */

/**
 * @param {View} view
 */
export function createSession(view) {
  /** The live session's parts; teardown() swaps in an empty one. */
  let live = idle();
  let wanted = null;          // the pipeline the user started and has not stopped
  let connectedOnce = false;  // has `wanted` worked yet? if not, a failure ends it instead
  let attempts = 0;           // failures since the last "connected": the backoff's exponent
  let restarts = 0;           // sessions started by recovery, over the page's life
  let restartTimer = null;
  let disconnectTimer = null;
  let generation = 0;         // bumped by every teardown: an older connect() in flight is stale

  function idle() {
    return { pc: null, sessionId: null, camera: null, stopStats: () => {} };
  }

  /**
   * The user pressed Start on `pipeline`, or picked another one while streaming: one action
   * ends the running session and starts the new one, so nothing is sent to the wrong chain.
   */
  async function start(pipeline) {
    clearTimeout(restartTimer);
    restartTimer = null;
    if (live.pc || live.sessionId) await teardown();
    wanted = pipeline;
    connectedOnce = false;
    attempts = 0;
    view.running(true);
    await connect(pipeline);
  }

  /**
   * One attempt at a session. Every await is a point where Stop or a restart may have torn
   * the session down; `check()` then throws, and the attempt undoes only what it made itself.
   */
  async function connect(p) {
    const attempt = ++generation;
    const check = () => { if (attempt !== generation) throw new Stale("superseded"); };
    let pc = null, camera = null, sessionId = null;
    view.phase("connecting");
    try {
      pc = new RTCPeerConnection({ iceServers: [] });
      live.pc = pc;
      const stream = new MediaStream();
      view.play(stream);
      pc.addEventListener("track", (event) => stream.addTrack(event.track));
      pc.addEventListener("connectionstatechange", () => onConnectionState(pc));
      if (p.accepts_video || p.accepts_audio) {
        // one prompt for what the pipeline takes: the camera and/or the microphone (echo
        // cancellation on unless the page's toggle says otherwise: the output may be playing)
        const audio = p.accepts_audio && { echoCancellation: view.echoCancellation?.() ?? true };
        camera = await withTimeout(navigator.mediaDevices.getUserMedia({ video: !!p.accepts_video, audio }),
                                   CAMERA_MS, p.accepts_video ? "camera" : "microphone");
        check();
        live.camera = camera;
      }
      if (p.accepts_video) {
        pc.addTransceiver(camera.getVideoTracks()[0], { direction: p.produces_video ? "sendrecv" : "sendonly" });
      } else if (p.produces_video) {
        pc.addTransceiver("video", { direction: "recvonly" });
      }
      if (p.accepts_audio) {
        pc.addTransceiver(camera.getAudioTracks()[0], { direction: p.produces_audio ? "sendrecv" : "sendonly" });
      } else if (p.produces_audio) {
        pc.addTransceiver("audio", { direction: "recvonly" });
      }
      const channel = pc.createDataChannel("parameters", { ordered: true });
      channel.addEventListener("message", (event) => onChannelMessage(pc, event.data));
      useChannel(channel);
      view.audioOnly(!p.produces_video);
      const offer = await pc.createOffer();
      await pc.setLocalDescription({ type: "offer", sdp: preferStereoOpus(offer.sdp) });
      await waitForIce(pc);
      check();
      const answer = await withTimeout(api("/api/v1/webrtc/offer", {
        method: "POST",
        body: JSON.stringify({ sdp: pc.localDescription.sdp, type: "offer",
                               initialParameters: initialParameters(p.id) }),
      }), OFFER_MS, "offer");
      sessionId = answer.sessionId;
      check();
      live.sessionId = sessionId;
      await pc.setRemoteDescription({ type: "answer", sdp: answer.sdp });
      check();
      live.stopStats = watchStats(sessionId, {
        show: (figures) => view.stats(figures, pc), lost: scheduleRestart });
    } catch (err) {
      if (attempt !== generation) {  // Stop or a newer attempt took over: undo only ours
        pc?.close();
        camera?.getTracks().forEach((t) => t.stop());
        if (sessionId) endSession(sessionId);
        return;
      }
      await teardown();
      if (connectedOnce && !isPermanent(err)) {
        scheduleRestart(err.message);
      } else {  // never worked, or cannot work: say why and let the user choose
        await stop();
        view.phase("failed", err.message);
      }
    }
  }

  /** The relay speaks on the parameters channel to report a failed pipeline, a value the
   * cloud refused and a --reload edit that did not load (docs/protocol.md). */
  function onChannelMessage(pc, data) {
    if (pc !== live.pc || typeof data !== "string") return;
    let message;
    try { message = JSON.parse(data); } catch { return; }
    if (message?.type === "error" && message.code === "PIPELINE_FAILED") {
      view.pipelineFailed(String(message.error || "the pipeline failed"));
    } else if (message?.type === "parameter_refused") {
      view.notice(`${message.name}: not applied (${message.reason})`);
    } else if (message?.type === "pipeline_reload_failed") {
      view.notice(`${message.pipeline} was edited but did not load; still playing the old code: ${message.error}`);
    }
  }

  function onConnectionState(pc) {
    if (pc !== live.pc) return;  // an older session's last words
    clearTimeout(disconnectTimer);
    if (pc.connectionState === "connected") {
      attempts = 0;
      connectedOnce = true;
      view.phase("live");
    } else if (pc.connectionState === "failed") {
      scheduleRestart("connection failed");
    } else if (pc.connectionState === "disconnected") {
      // past the time a blip takes to heal, start a new session
      disconnectTimer = setTimeout(() => {
        if (pc === live.pc && pc.connectionState === "disconnected") scheduleRestart("connection lost");
      }, HEAL_MS);
    }
  }

  /** Ends the live session now and starts a new one on `wanted` after a growing delay. */
  function scheduleRestart(reason) {
    if (!wanted || restartTimer) return;
    const delay = Math.min(MAX_BACKOFF_MS, 1000 * 2 ** attempts++);
    view.phase("retrying", `${reason}; trying again in ${delay / 1000} s`);
    teardown();
    restartTimer = setTimeout(async () => {
      restartTimer = null;
      if (!wanted) return;
      restarts += 1;
      await connect(wanted);
    }, delay);
  }

  /** Closes the live session, here and on the relay, and makes any connect() in flight stale. */
  async function teardown() {
    generation += 1;
    clearTimeout(disconnectTimer);
    const { pc, sessionId, camera, stopStats } = live;
    live = idle();
    useChannel(null);
    stopStats();
    view.stats(null, null);
    camera?.getTracks().forEach((t) => t.stop());
    // the relay first: closing our peer first makes the relay end the session itself, and
    // the DELETE then finds nothing (a 404 in the console on every Stop)
    if (sessionId) await endSession(sessionId);
    pc?.close();
  }

  /** The user pressed Stop (or the session could not start): no more reconnecting. */
  async function stop() {
    wanted = null;
    clearTimeout(restartTimer);
    restartTimer = null;
    await teardown();
    view.running(false);
    view.phase("stopped");
  }

  /** Read-only facts about the live session; main.js publishes them as the test hook. */
  const facts = Object.freeze({
    /** The relay's id for the live session, or null. */
    get sessionId() { return live.sessionId; },
    /** The live RTCPeerConnection's connectionState, or null when there is none. */
    get connectionState() { return live.pc?.connectionState ?? null; },
    /** How many sessions recovery has started since the page loaded. */
    get restarts() { return restarts; },
    /** The offer as sent to the relay (after the stereo edit), or null. */
    get localSdp() { return live.pc?.localDescription?.sdp ?? null; },
    /** The camera track's readyState ("live" or "ended"), or null without a camera. */
    get cameraTrackState() { return live.camera?.getVideoTracks()[0]?.readyState ?? null; },
    /** The pipeline the user started and has not stopped (its id), or null. */
    get pipeline() { return wanted?.id ?? null; },
  });

  return Object.freeze({ start, stop, facts });
}
