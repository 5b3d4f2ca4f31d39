// The pipeline's parameters as controls built from its schema (GET /api/v1/pipelines):
// sliders with a typed entry for numbers, whole-number entry for integers, toggles, text, a
// prompt list with weights. A value is checked before it is sent; an invalid one is shown as
// invalid and kept off the wire. What the user sets is remembered here and handed to every
// new session, so a reconnect keeps the settings.

import { icon } from "./icons.js";
import { addModulation, resetModulations } from "./modulation.js";

/** @type {Record<string, unknown>} values set on the page for the shown pipeline */
let values = {};
/** @type {RTCDataChannel | null} the live session's "parameters" channel, if any */
let channel = null;
/** @type {Record<string, Control>} the shown controls, by parameter name */
let controls = {};
/** name -> value waiting for the next send: a dragged slider sends at most ~30 times a second */
let pending = {};
let flushTimer = null;
const SEND_MS = 33;

/**
 * @typedef {object} Control
 * @property {object} spec
 * @property {(fraction: number) => void} setFraction  a controller's 0..1 position (MIDI)
 * @property {HTMLButtonElement|null} learn            the MIDI-learn button, if mappable
 * @property {HTMLElement} row                         the control's row
 * @property {HTMLElement} note                        the line under it for problems
 */

/** A slider step that gives about a thousand positions, rounded to a power of ten. */
function niceStep(spec) {
  if (spec.type === "integer") return 1;
  const span = spec.maximum - spec.minimum;
  return 10 ** Math.floor(Math.log10(span / 1000));
}

/**
 * Why `text` is not a valid value for `spec`, or null when it is.
 * @param {object} spec @param {string} text
 */
export function numberProblem(spec, text) {
  if (text.trim() === "") return "enter a number";
  const n = Number(text);
  if (!Number.isFinite(n)) return "not a number";
  if (spec.type === "integer" && !Number.isInteger(n)) return "a whole number";
  if (spec.minimum != null && n < spec.minimum) return `at least ${spec.minimum}`;
  if (spec.maximum != null && n > spec.maximum) return `at most ${spec.maximum}`;
  return null;
}

function markInvalid(input, note, problem) {
  input.setAttribute("aria-invalid", problem ? "true" : "false");
  input.classList.toggle("invalid", !!problem);
  note.textContent = problem ? `invalid: ${problem} — not sent` : "";
}

/**
 * Shows `pipeline`'s parameters in `box` and forgets what was set for the one shown before:
 * another pipeline starts from its own defaults, not the last one's settings.
 * @param {HTMLElement} box
 * @param {{params?: Record<string, any>}} pipeline
 * @param {{onLearn?: (name: string) => void}} [hooks]
 */
export function showParams(box, pipeline, hooks = {}) {
  values = {};
  pending = {};
  controls = {};
  resetModulations();
  box.replaceChildren();
  const entries = Object.entries(pipeline.params || {});
  if (!entries.length) {
    const none = document.createElement("p");
    none.className = "muted";
    none.textContent = "This pipeline has no parameters.";
    box.append(none);
  }
  for (const [name, spec] of entries) {
    const row = document.createElement("div");
    row.className = `param param-${spec.type}`;
    row.dataset.param = name;
    const head = document.createElement("div");
    head.className = "param-head";
    const label = document.createElement("label");
    if (typeof spec.label === "string" && spec.label.trim()) {
      // the author's own words ("Root (Hz)"): shown as written, not title-cased
      label.textContent = spec.label;
      label.style.textTransform = "none";
    } else {
      label.textContent = name.replace(/_/g, " ");
    }
    label.htmlFor = `param-${name}`;
    head.append(label);
    const note = document.createElement("span");
    note.className = "param-note";
    note.setAttribute("aria-live", "polite");
    const build = BUILDERS[spec.type];
    if (!build) continue;
    const { body, setFraction } = build(name, spec, note);
    let learn = null;
    if (setFraction && hooks.onLearn) {
      learn = document.createElement("button");
      learn.type = "button";
      learn.className = "learn icon-button";
      learn.title = `MIDI learn: move a knob or fader to map it to ${name}`;
      learn.setAttribute("aria-label", `MIDI learn ${name}`);
      learn.dataset.learn = name;
      learn.innerHTML = icon("midi");
      learn.addEventListener("click", () => hooks.onLearn(name));
      head.append(learn);
    }
    row.title = spec.description || "";
    row.append(head, body, note);
    if (spec.type === "number" || spec.type === "integer") addModulation(row, head, name, spec, setParam);
    if (spec.description) {
      const help = document.createElement("p");
      help.className = "param-help";
      help.textContent = spec.description;
      row.append(help);
    }
    box.append(row);
    controls[name] = { spec, setFraction, learn, row, note };
  }
}

const BUILDERS = {
  number: numberControl,
  integer: numberControl,
  boolean: booleanControl,
  string: stringControl,
  prompts: promptsControl,
};

/** The <input> that holds parameter `name`'s value (its label points at `param-<name>`). */
function paramInput(type, name) {
  const input = document.createElement("input");
  input.type = type;
  input.id = `param-${name}`;
  input.name = name;
  return input;
}

/** A slider (when the range is known) and a typed entry showing the same value. */
function numberControl(name, spec, note) {
  const body = document.createElement("div");
  body.className = "param-body";
  const entry = paramInput("number", name);
  entry.className = "entry";
  entry.value = String(spec.default ?? "");
  entry.step = spec.type === "integer" ? "1" : "any";
  if (spec.minimum != null) entry.min = String(spec.minimum);
  if (spec.maximum != null) entry.max = String(spec.maximum);
  let slider = null;
  if (spec.minimum != null && spec.maximum != null) {
    slider = document.createElement("input");
    slider.type = "range";
    slider.name = `${name}-slider`;
    slider.min = String(spec.minimum);
    slider.max = String(spec.maximum);
    slider.step = String(niceStep(spec));
    slider.value = String(spec.default ?? spec.minimum);
    slider.setAttribute("aria-label", name);
    slider.addEventListener("input", () => {
      entry.value = slider.value;
      markInvalid(entry, note, null);
      setParam(name, Number(slider.value));
    });
    body.append(slider);
  }
  const commit = () => {
    const problem = numberProblem(spec, entry.value);
    markInvalid(entry, note, problem);
    if (problem) return;
    if (slider) slider.value = entry.value;
    setParam(name, Number(entry.value));
  };
  entry.addEventListener("input", () => markInvalid(entry, note, numberProblem(spec, entry.value)));
  entry.addEventListener("change", commit);
  body.append(entry);
  const setFraction = slider ? (fraction) => {
    let v = spec.minimum + fraction * (spec.maximum - spec.minimum);
    v = spec.type === "integer" ? Math.round(v) : Number(v.toPrecision(6));
    slider.value = String(v);
    entry.value = String(v);
    markInvalid(entry, note, null);
    setParam(name, v);
  } : null;
  return { body, setFraction };
}

function booleanControl(name, spec) {
  const body = document.createElement("label");
  body.className = "param-body switch";
  const box = paramInput("checkbox", name);
  box.setAttribute("role", "switch");
  box.checked = !!spec.default;
  const track = document.createElement("span");
  track.className = "switch-track";
  box.addEventListener("change", () => setParam(name, box.checked));
  body.append(box, track);
  const setFraction = (fraction) => {
    box.checked = fraction >= 0.5;
    setParam(name, box.checked);
  };
  return { body, setFraction };
}

function stringControl(name, spec) {
  const input = paramInput("text", name);
  input.className = "param-body";
  input.value = String(spec.default ?? "");
  input.addEventListener("change", () => setParam(name, input.value));
  return { body: input, setFraction: null };
}

/** Rows of prompt text and weight; the whole list is sent when a valid row changes. */
function promptsControl(name, spec, note) {
  const body = document.createElement("div");
  body.className = "param-body prompts";
  const list = document.createElement("div");
  list.className = "prompt-list";
  const add = document.createElement("button");
  add.type = "button";
  add.className = "small";
  add.innerHTML = `${icon("plus")}<span>Add prompt</span>`;
  const read = () => [...list.children].map((row) => ({
    text: row.querySelector("input[type=text]").value,
    weightText: row.querySelector("input[type=number]").value,
    row,
  }));
  const commit = () => {
    let problem = null;
    for (const p of read()) {
      const bad = p.text.trim() === "" ? "a prompt needs text"
        : numberProblem({ type: "number", minimum: 0 }, p.weightText);
      p.row.classList.toggle("invalid", !!bad);
      for (const input of p.row.querySelectorAll("input")) input.setAttribute("aria-invalid", String(!!bad));
      problem ||= bad;
    }
    if (!list.children.length) problem = "at least one prompt";
    note.textContent = problem ? `invalid: ${problem} — not sent` : "";
    if (problem) return;
    setParam(name, read().map((p) => ({ text: p.text, weight: Number(p.weightText) })));
  };
  const addRow = (prompt) => {
    const row = document.createElement("div");
    row.className = "prompt-row";
    const text = document.createElement("input");
    text.type = "text";
    text.value = prompt.text;
    text.placeholder = "describe it";
    text.setAttribute("aria-label", "prompt");
    const weight = document.createElement("input");
    weight.type = "number";
    weight.step = "0.1";
    weight.min = "0";
    weight.value = String(prompt.weight ?? 1);
    weight.setAttribute("aria-label", "weight");
    const remove = document.createElement("button");
    remove.type = "button";
    remove.className = "icon-button";
    remove.setAttribute("aria-label", "remove prompt");
    remove.innerHTML = icon("close");
    remove.addEventListener("click", () => { row.remove(); commit(); });
    text.addEventListener("change", commit);
    weight.addEventListener("change", commit);
    row.append(text, weight, remove);
    list.append(row);
  };
  for (const p of spec.default || []) addRow(p);
  add.addEventListener("click", () => { addRow({ text: "", weight: 1 }); list.lastChild.querySelector("input").focus(); });
  body.append(list, add);
  body.id = `param-${name}`;
  return { body, setFraction: null };
}

/** Records a value and, if a session is open, sends it soon (coalesced). Also for the
 * session controls the protocol reserves (`paused`), so a reconnect keeps them too. */
export function setParam(name, value) {
  clearRefused(name);
  values[name] = value;
  pending[name] = value;
  if (!flushTimer) flushTimer = setTimeout(flush, SEND_MS);
}

function flush() {
  flushTimer = null;
  if (!Object.keys(pending).length) return;
  if (channel?.readyState === "open") channel.send(JSON.stringify(pending));
  pending = {};
}

/** A mapped controller moved: `fraction` in 0..1 across the control's range. */
export function setFromController(name, fraction) {
  controls[name]?.setFraction?.(fraction);
}

/**
 * The pipeline refused `value` for `name` (the relay's `parameter_refused`, whoever sent it:
 * this page, OSC, the API): the control is marked invalid with the reason until it is set
 * again. False when no control of the shown pipeline has that name.
 * @param {string} name @param {unknown} value @param {string} reason
 */
export function showRefused(name, value, reason) {
  const c = controls[name];
  if (!c) return false;
  c.row.classList.add("refused");
  for (const input of c.row.querySelectorAll("input")) input.setAttribute("aria-invalid", "true");
  c.note.textContent = `refused ${JSON.stringify(value) ?? ""}: ${reason}`;
  return true;
}

function clearRefused(name) {
  const c = controls[name];
  if (!c?.row.classList.contains("refused")) return;
  c.row.classList.remove("refused");
  for (const input of c.row.querySelectorAll("input")) input.setAttribute("aria-invalid", "false");
  c.note.textContent = "";
}

/** MIDI learn cannot work for `name`: the knob button says why (and looks refused). */
export function showLearnRefused(name, why) {
  const learn = controls[name]?.learn;
  if (!learn) return;
  learn.classList.add("refused");
  learn.title = `MIDI learn unavailable: ${why}`;
}

/** Which control is waiting for a controller (MIDI learn), or null; and which are mapped. */
export function showLearning(learning, mapped) {
  for (const [name, c] of Object.entries(controls)) {
    if (!c.learn) continue;
    c.learn.classList.toggle("armed", learning === name);
    if (learning === name) {  // armed again: whatever refused it before is being retried
      c.learn.classList.remove("refused");
      c.learn.title = `MIDI learn: move a knob or fader to map it to ${name}`;
    }
    c.learn.classList.toggle("mapped", mapped.has(name));
    c.learn.setAttribute("aria-pressed", String(learning === name));
  }
}

/**
 * The offer's `initialParameters`: everything set so far, so a new session (a reconnect
 * included) starts where the last one was left.
 * @param {string} pipelineId
 */
export function initialParameters(pipelineId) {
  return { ...values, pipeline_ids: [pipelineId] };
}

/**
 * Where live changes go from now on; null while no session is open. A change made meanwhile
 * is only recorded, and reaches the relay with the next session's offer.
 * @param {RTCDataChannel | null} next
 */
export function useChannel(next) {
  channel = next;
}
