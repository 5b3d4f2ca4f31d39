// Recording at the relay: the Record button, the elapsed time while it runs, and a download
// link once stopped. The relay records exactly what it sends this page (docs/protocol.md,
// "Recording"), so the page only starts and stops it; nothing is recorded in the browser.
// A recording the relay ended by itself (a size or time cap, a full disk, a write error) is
// pushed to the page on the session's data channel (ended()): the clock stops there and
// then, the reason is shown, and a file that survived is offered. Nothing polls.

import { api } from "./api.js";

const TICK_MS = 250;

const clock = (seconds) => {
  const s = Math.max(0, Math.floor(seconds));
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
};

/**
 * @param {{button: HTMLButtonElement, elapsed: HTMLElement, link: HTMLAnchorElement, notice?: HTMLElement}} view
 * @param {() => string|null} sessionId  the live session's id, or null
 */
export function createRecorder(view, sessionId) {
  let recordingId = null;
  let recorded = null;  // the session being recorded
  let startedAt = 0;
  let timer = null;
  let busy = false;
  const facts = { state: "idle", recordingId: null, elapsed: 0, url: null, duration: null, error: null,
                  ended: null };

  function show() {
    const recording = facts.state === "recording";
    view.button.disabled = busy || (!recording && !sessionId());
    view.button.setAttribute("aria-pressed", String(recording));
    view.button.querySelector("span").textContent = recording ? "Stop recording" : "Record";
    view.elapsed.hidden = !recording;
    view.elapsed.textContent = recording ? `● ${clock(facts.elapsed)}` : "";
    view.link.hidden = !facts.url;
    if (facts.url) {
      view.link.href = facts.url;
      view.link.textContent = `Download recording (${clock(facts.duration ?? 0)})`;
    }
    view.button.title = facts.error ? `recording: ${facts.error}` : "Record what this page receives (MP4)";
    view.button.dataset.error = facts.error ? "true" : "false";
    if (view.notice) {
      view.notice.hidden = !facts.error;
      view.notice.textContent = facts.error ? `Recording ${facts.ended === "stopped" ? "stopped" : "failed"}: ${facts.error}` : "";
    }
  }

  function tick() {
    facts.elapsed = (performance.now() - startedAt) / 1000;
    show();
  }

  async function start() {
    const id = sessionId();
    if (!id) return;
    const started = await api("/api/v1/recordings", { method: "POST", body: JSON.stringify({ sessionId: id }) });
    recordingId = started.recordingId;
    recorded = id;
    startedAt = performance.now();
    Object.assign(facts, { state: "recording", recordingId, elapsed: 0, url: null, duration: null, ended: null });
    timer = setInterval(tick, TICK_MS);
  }

  async function stop() {
    clearInterval(timer);
    timer = null;
    const id = recordingId;
    recordingId = null;
    facts.state = "idle";
    if (!id) return;
    const done = await api(`/api/v1/recordings/${id}`, { method: "DELETE" });
    Object.assign(facts, { url: done.url, duration: done.duration });
  }

  /** The button: start, or stop and offer the file. Errors are shown, never thrown. */
  async function toggle() {
    if (busy) return;
    busy = true;
    facts.error = null;
    show();
    try {
      if (facts.state === "recording") await stop(); else await start();
    } catch (err) {
      facts.error = err.message;
    } finally {
      busy = false;
      show();
    }
  }

  view.button.addEventListener("click", toggle);
  show();

  return {
    /** The session came, went or was replaced: the relay finishes the recording of an
     *  ended session, and this fetches its link. */
    sessionChanged() {
      if (facts.state === "recording" && sessionId() !== recorded) toggle();
      else show();
    },
    /** The relay ended the recording by itself ({type: "recording", recordingId, state:
     *  "stopped" | "failed", reason, message?, error?, url?, duration?}): show it now. */
    ended(message) {
      if (!message || message.recordingId !== recordingId) return;
      clearInterval(timer);
      timer = null;
      recordingId = null;
      Object.assign(facts, { state: "idle", ended: message.state, url: message.url ?? null,
                             duration: message.duration ?? null,
                             error: String(message.message || message.error || message.reason || message.state) });
      show();
    },
    /** Read-only facts for the page's test hook. */
    get facts() { return { ...facts }; },
  };
}
