// The tempo strip: the relay's beat (GET /api/v1/tempo), its source, BPM, quantize and tap
// (PUT /api/v1/tempo). Self-contained: it owns the #tempo section and nothing else. The beat
// indicator runs from the last state the relay gave (bpm and beat at that moment), so it
// moves smoothly between polls; each poll puts it back on the relay's beat.

import { api } from "./api.js";

const POLL_MS = 1000;
/** how often the page's MIDI clock is sent to the relay while the source is "page" */
const PAGE_CLOCK_MS = 500;
const PPQN = 24;
/** ticks the BPM line is fitted through (two beats), as the relay's own MIDI clock does */
const WINDOW = 48;
/** seconds: the page's latency is sent again when it moves by this much */
const REPORT_STEP = 0.002;
/** the receive side's latency is the median of this many looks (one a second) */
const LOOKS = 5;
/** milliseconds from the NTP epoch (1900) to the Unix one */
const NTP_UNIX_MS = 2208988800000;

/**
 * The page's Web MIDI clock: 24 ticks a beat from every MIDI input, start (the next tick is
 * beat 0), stop, continue. `grid()` is a least-squares line through the last two beats'
 * ticks: `{bpm, beat}` now, or null with too few ticks.
 */
function createMidiClock() {
  let tick = 0;
  let playing = true;
  /** @type {[number, number][]} (tick index, performance.now() ms) */
  let points = [];
  function received(event) {
    const [status] = event.data;
    if (status === 0xF8) {
      if (points.length && event.timeStamp - points[points.length - 1][1] > 500) points = [];
      points.push([tick, event.timeStamp]);
      if (points.length > WINDOW) points.shift();
      tick += 1;
    } else if (status === 0xFA) { tick = 0; points = []; playing = true; }
    else if (status === 0xFC) { playing = false; }
    else if (status === 0xFB) { playing = true; }
  }
  function grid() {
    if (points.length < 6 || !playing) return null;
    const n = points.length;
    const mk = points.reduce((a, [k]) => a + k, 0) / n;
    const mt = points.reduce((a, [, t]) => a + t, 0) / n;
    let num = 0, den = 0;
    for (const [k, t] of points) { num += (k - mk) * (t - mt); den += (k - mk) ** 2; }
    const msPerTick = num / den;
    if (!(msPerTick > 0)) return null;
    const bpm = 60000 / (msPerTick * PPQN);
    const beat = (mk + (performance.now() - mt) / msPerTick) / PPQN;
    return { bpm: Math.min(Math.max(bpm, 20), 999), beat };
  }
  return { received, grid };
}

/** @param {HTMLElement} root the #tempo section */
export function createTempo(root) {
  const $ = (name) => root.querySelector(`[name=${name}]`);
  const dots = root.querySelector(".beat-dots");
  const note = root.querySelector(".tempo-note");
  const peers = root.querySelector(".tempo-peers");
  /** last state from the relay, and performance.now() when it came */
  let last = null;
  let lastAt = 0;

  function show(state) {
    last = state;
    lastAt = performance.now();
    if (document.activeElement !== $("source")) $("source").value = state.source;
    if (document.activeElement !== $("quantize")) $("quantize").value = state.quantize;
    if (document.activeElement !== $("bpm") && state.bpm != null) $("bpm").value = state.bpm.toFixed(1);
    $("bpm").disabled = state.source === "off" || state.source === "midi";
    peers.textContent = state.source === "link" ? `${state.peers} Link peer${state.peers === 1 ? "" : "s"}` : "";
    if (dots.children.length !== state.beats_per_bar) {
      dots.replaceChildren(...Array.from({ length: state.beats_per_bar }, () => document.createElement("span")));
    }
  }

  async function put(body) {
    try {
      show(await api("/api/v1/tempo", { method: "PUT", body: JSON.stringify(body) }));
      note.textContent = "";
    } catch (error) {
      note.textContent = error.message;  // the relay says what it refused; nothing changed
    }
  }

  async function poll() {
    try {
      show(await api("/api/v1/tempo"));
    } catch {
      // the relay is gone: the page's own status says so; keep the last beat
    }
  }

  function frame() {
    let current = -1;
    if (last && last.bpm != null && last.playing) {
      const beat = last.beat + (performance.now() - lastAt) / 1000 * last.bpm / 60;
      current = ((Math.floor(beat) % last.beats_per_bar) + last.beats_per_bar) % last.beats_per_bar;
      root.dataset.beat = String(Math.floor(beat));
    }
    [...dots.children].forEach((dot, k) => dot.classList.toggle("on", k === current));
    requestAnimationFrame(frame);
  }

  $("source").addEventListener("change", () => put({ source: $("source").value }));
  $("quantize").addEventListener("change", () => put({ quantize: $("quantize").value }));
  $("bpm").addEventListener("change", () => {
    const bpm = Number($("bpm").value);
    if ($("bpm").value === "" || !Number.isFinite(bpm) || bpm < 20 || bpm > 999) {
      note.textContent = "BPM must be from 20 to 999";
      return;
    }
    put({ bpm });
  });
  $("tap").addEventListener("click", () => put({ tap: true }));

  // the page's Web MIDI clock, sent while the source is "page"
  const clock = createMidiClock();
  let midiAsked = false;
  async function listenToMidi() {
    if (midiAsked) return;
    midiAsked = true;
    if (!navigator.requestMIDIAccess) { note.textContent = "this browser has no Web MIDI"; return; }
    try {
      const access = await navigator.requestMIDIAccess();
      const attach = () => access.inputs.forEach((input) => input.addEventListener("midimessage", clock.received));
      attach();
      access.addEventListener("statechange", attach);  // (the same listener is added once)
    } catch (error) {
      note.textContent = `Web MIDI refused: ${error.message}`;
    }
  }
  $("source").addEventListener("change", () => { if ($("source").value === "page") listenToMidi(); });
  setInterval(() => {
    const grid = last?.source === "page" ? clock.grid() : null;
    if (grid) put({ bpm: Math.round(grid.bpm * 1000) / 1000, beat: grid.beat });
  }, PAGE_CLOCK_MS);

  // What lies between the relay's release and the page's speakers that only the page knows,
  // which the relay adds to the path (docs/tempo.md): the receive side (jitter buffer, lip
  // sync, decoding, mixing) and the audio output's latency. The receive side is measured
  // whole where the browser estimates when the audio playing now was sent (getStats'
  // estimatedPlayoutTimestamp: the relay's sender-report clock, the wall clock of the
  // machine the page runs on, as it is for a page on the relay's machine); elsewhere the
  // jitter buffer's recent delay stands in. The output latency: an AudioContext runs only
  // after a gesture and knows its outputLatency once it has played a moment. Sent when the
  // median of the last few looks moves by 2 ms. With it goes the picture's lead over the
  // sound (page_video_lead): the video's estimatedPlayoutTimestamp says the same of the
  // frame on screen, so the audio's delay plus its output latency minus the video's delay
  // is how long before its sound a media time's picture is shown. Chromium's lip sync
  // rests anywhere in a band some 40 ms wide and moves as it settles; the cloud draws the
  // pictures for the beat seen, this much later (docs/tempo.md).
  let outputLatency = null;
  let jitter = null;  // [jitterBufferDelay, jitterBufferEmittedCount] last seen
  /** @type {number[]} the receive side's latest looks (seconds) */
  let receive = [];
  /** @type {number[]} the same for the video (its estimatedPlayoutTimestamp) */
  let receiveVideo = [];
  let sent = null;
  let sentLead = null;
  const median = (xs) => xs.length ? [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] : null;
  const clamp = (x) => Math.round(Math.max(-0.999, Math.min(x, 0.999)) * 10000) / 10000;
  function report() {
    if (outputLatency == null) return;
    const audio = median(receive) ?? 0;
    const video = median(receiveVideo);
    const latency = Math.min(outputLatency + audio, 0.999);
    const lead = video == null ? null : outputLatency + audio - video;
    const moved = sent == null || Math.abs(latency - sent) >= REPORT_STEP
      || (lead != null && (sentLead == null || Math.abs(lead - sentLead) >= REPORT_STEP));
    if (!moved) return;
    sent = latency;
    const body = { page_latency: clamp(latency) };
    if (lead != null) { sentLead = lead; body.page_video_lead = clamp(lead); }
    put(body);
  }
  function look(seconds) {
    receive.push(seconds);
    if (receive.length > LOOKS) receive.shift();
    report();
  }
  document.addEventListener("pointerdown", async () => {
    try {
      const context = new AudioContext();
      await context.resume();
      const began = performance.now();
      while (!(context.outputLatency > 0) && performance.now() - began < 1000) {
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      outputLatency = (context.outputLatency || 0) + (context.baseLatency || 0);
      await context.close();
      report();
    } catch {
      // no audio output: nothing to add
    }
  }, { once: true });
  /** The session's statistics (main.js, each time the figures come): the receive side. */
  function notePlayout(stats) {
    let audio = null;
    let video = null;
    stats?.forEach((s) => {
      if (s.type === "inbound-rtp" && s.kind === "audio") audio = s;
      if (s.type === "inbound-rtp" && s.kind === "video") video = s;
    });
    const shown = video?.estimatedPlayoutTimestamp;
    const videoDelay = shown ? (video.timestamp + NTP_UNIX_MS - shown) / 1000 : NaN;
    if (videoDelay > 0 && videoDelay < 1) {
      receiveVideo.push(videoDelay);
      if (receiveVideo.length > LOOKS) receiveVideo.shift();
    }
    if (!audio) { jitter = null; receive = []; return; }
    const played = audio.estimatedPlayoutTimestamp;  // NTP ms of what plays at audio.timestamp
    const measured = played ? (audio.timestamp + NTP_UNIX_MS - played) / 1000 : NaN;
    const now = [audio.jitterBufferDelay || 0, audio.jitterBufferEmittedCount || 0];
    if (measured > 0 && measured < 1) {
      look(measured);
    } else if (jitter && now[1] - jitter[1] >= 48000) {  // a second of samples or more
      look((now[0] - jitter[0]) / (now[1] - jitter[1]));
      jitter = now;
    } else if (!jitter || now[1] < jitter[1]) {
      jitter = now;  // the first look, or a new session
    }
  }
  poll();
  setInterval(poll, POLL_MS);
  requestAnimationFrame(frame);
  return {
    refresh: poll, notePlayout, get state() { return last; },
    /** seconds: the receive side's delay, audio and video, and the audio output's */
    get playout() {
      return { audio: median(receive), video: median(receiveVideo), output: outputLatency };
    },
  };
}

const root = document.getElementById("tempo");
const tempo = root ? createTempo(root) : null;
if (tempo) window.scopeRelayTempo = tempo;

/** main.js hands the session's getStats() here: the receive side's delay (page_latency). */
export function notePlayout(stats) {
  tempo?.notePlayout(stats);
}
