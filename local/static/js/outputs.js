// The Outputs menu: where the performer's tools pick this session up (docs/outputs.md).
// WHEP, MPEG-TS and WHIP are URLs to paste into a tool; NDI is started and stopped here.
// The figures come with the session's own (`outputs` in its stats); nothing here polls.

import { api } from "./api.js";

/**
 * @param {{menu: HTMLDetailsElement, summary: HTMLElement, whep: HTMLElement, ts: HTMLElement,
 *          whip: HTMLElement, ndiName: HTMLInputElement, ndiToggle: HTMLButtonElement,
 *          ndiState: HTMLElement}} view
 * @param {() => string|null} sessionId  the live session's id, or null
 */
export function createOutputsMenu(view, sessionId) {
  let ndiId = null;  // the NDI output this page started
  let ndiSession = null;
  let busy = false;
  let error = null;
  let figures = null;

  function show() {
    const id = sessionId();
    view.menu.hidden = !id;
    if (ndiSession !== id) { ndiId = null; ndiSession = id; }  // (ends with its session)
    view.ndiToggle.disabled = busy || !id;
    view.ndiToggle.textContent = ndiId ? "Stop NDI" : "Start NDI";
    view.ndiName.disabled = !!ndiId;
    const ndi = figures?.ndi;
    view.ndiState.textContent = error ? error
      : ndiId && ndi ? `${ndi.clients} receiving · ${ndi.frames_sent} frames sent` : "";
    view.ndiState.dataset.tone = error ? "bad" : "";
    const count = (kind) => figures?.[kind]?.clients ?? 0;
    for (const span of view.menu.querySelectorAll("[data-count]")) {
      const kind = span.dataset.count;
      const dropped = figures?.[kind]?.clients_dropped ?? 0;
      span.textContent = !count(kind) ? "" : kind === "whip" ? "feeding the session"
        : `${count(kind)} ${count(kind) === 1 ? "client" : "clients"}${dropped ? ` · ${dropped} dropped` : ""}`;
    }
    const total = count("whep") + count("ts") + count("whip") + (figures?.ndi?.outputs ?? 0);
    view.summary.textContent = total ? `Outputs (${total})` : "Outputs";
  }

  async function toggleNdi() {
    if (busy || !sessionId()) return;
    busy = true;
    error = null;
    show();
    try {
      if (ndiId) {
        await api(`/api/v1/outputs/${ndiId}`, { method: "DELETE" });
        ndiId = null;
      } else {
        const name = view.ndiName.value.trim();
        const started = await api("/api/v1/outputs", { method: "POST", body: JSON.stringify(
          { sessionId: sessionId(), kind: "ndi", ...(name ? { name } : {}) }) });
        ndiId = started.outputId;
        view.ndiName.value = started.name;
      }
    } catch (err) {
      error = err.message;
    } finally {
      busy = false;
      show();
    }
  }

  for (const button of view.menu.querySelectorAll("button[data-copy]")) {
    button.addEventListener("click", () => {
      const text = view[button.dataset.copy].textContent;
      if (text) navigator.clipboard?.writeText(text).catch(() => {});
    });
  }
  view.ndiToggle.addEventListener("click", toggleNdi);
  show();

  return {
    /** The session's figures (null when it ended): its output URLs and their counts. */
    update(m) {
      figures = m?.outputs ?? null;
      view.whep.textContent = m?.whepUrl ?? "";
      view.ts.textContent = m?.tsUrl ?? "";
      view.whip.textContent = m && sessionId() ? `${location.origin}/whip/${sessionId()}` : "";
      show();
    },
    /** Read-only facts for the page's test hook. */
    get facts() { return { ndiId, error, figures }; },
  };
}
