// The tempo strip: the relay's beat (GET /api/v1/tempo), its source, BPM, quantize and tap
// (PUT /api/v1/tempo). Self-contained: it owns the #tempo section and nothing else. The beat
// indicator runs from the last state the relay gave (bpm and beat at that moment), so it
// moves smoothly between polls; each poll puts it back on the relay's beat.

import { api } from "./api.js";

const POLL_MS = 1000;

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
  poll();
  setInterval(poll, POLL_MS);
  requestAnimationFrame(frame);
  return { refresh: poll, get state() { return last; } };
}

const root = document.getElementById("tempo");
if (root) window.scopeRelayTempo = createTempo(root);
