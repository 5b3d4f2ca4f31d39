// Per-parameter beat modulation (docs/tempo.md, Modulation): a wave button on each numeric
// parameter opens an editor (shape, rate in beats, depth, bounds). The whole set goes out as
// the reserved `modulate` parameter, through the same path as any value (params.js setParam),
// so it is remembered and handed to a new session like the rest. Checked here first: an
// invalid field is marked and the set is not sent.

export const SHAPES = ["off", "sine", "triangle", "saw", "square", "decay"];
const MIN_RATE = 1 / 64;
const MAX_RATE = 256;

/** @type {Record<string, {shape: string, rate: number, depth: number, min?: number, max?: number}>} */
let modulations = {};

/** The shown pipeline changed: its modulations start empty (as its values do). */
export function resetModulations() {
  modulations = {};
}

/** Why the editor's fields are not a modulation, or null when they are. */
export function modulationProblem(fields) {
  const rate = Number(fields.rate);
  if (fields.rate.trim() === "" || !Number.isFinite(rate) || rate < MIN_RATE || rate > MAX_RATE) {
    return "rate: beats from 1/64 to 256";
  }
  if (fields.depth.trim() === "" || !Number.isFinite(Number(fields.depth))) return "depth: a number";
  for (const key of ["min", "max"]) {
    if (fields[key].trim() !== "" && !Number.isFinite(Number(fields[key]))) return `${key}: a number or empty`;
  }
  if (fields.min.trim() !== "" && fields.max.trim() !== "" && Number(fields.min) > Number(fields.max)) {
    return "min above max";
  }
  return null;
}

/**
 * Adds the modulation button to a numeric parameter's head and its editor to the row.
 * @param {HTMLElement} row @param {HTMLElement} head @param {string} name @param {object} spec
 * @param {(name: string, value: unknown) => void} send  params.js setParam
 */
export function addModulation(row, head, name, spec, send) {
  const toggle = document.createElement("button");
  toggle.type = "button";
  toggle.className = "mod-toggle icon-button";
  toggle.title = `Modulate ${name} with the beat`;
  toggle.setAttribute("aria-label", `Modulate ${name}`);
  toggle.setAttribute("aria-expanded", "false");
  toggle.textContent = "∿";
  const editor = document.createElement("div");
  editor.className = "modulation";
  editor.hidden = true;
  editor.dataset.modulate = name;
  const field = (label, input) => {
    const wrap = document.createElement("label");
    wrap.className = "field";
    wrap.append(label, input);
    editor.append(wrap);
    return input;
  };
  const shape = document.createElement("select");
  shape.name = `${name}-mod-shape`;  // (named like the slider: no clash with a parameter)
  for (const s of SHAPES) shape.add(new Option(s, s));
  field("shape", shape);
  const number = (key, value, placeholder = "") => {
    const input = document.createElement("input");
    input.type = "number";
    input.step = "any";
    input.name = `${name}-mod-${key}`;
    input.value = value;
    input.placeholder = placeholder;
    return field(key === "rate" ? "rate (beats)" : key, input);
  };
  const span = spec.minimum != null && spec.maximum != null ? spec.maximum - spec.minimum : 1;
  const rate = number("rate", "1");
  const depth = number("depth", String(Number((span / 4).toPrecision(3))));
  const low = number("min", "", spec.minimum != null ? String(spec.minimum) : "none");
  const high = number("max", "", spec.maximum != null ? String(spec.maximum) : "none");
  const note = document.createElement("span");
  note.className = "param-note mod-note";
  note.setAttribute("aria-live", "polite");
  editor.append(note);

  function apply() {
    const fields = { rate: rate.value, depth: depth.value, min: low.value, max: high.value };
    const problem = shape.value === "off" ? null : modulationProblem(fields);
    for (const input of [rate, depth, low, high]) input.setAttribute("aria-invalid", "false");
    note.textContent = problem ? `invalid ${problem} — not sent` : "";
    if (problem) {
      const key = problem.split(":")[0].split(" ")[0];
      editor.querySelector(`[name=${name}-mod-${key}]`)?.setAttribute("aria-invalid", "true");
      return;
    }
    const next = { ...modulations };
    if (shape.value === "off") {
      delete next[name];
    } else {
      next[name] = { shape: shape.value, rate: Number(rate.value), depth: Number(depth.value) };
      if (low.value.trim() !== "") next[name].min = Number(low.value);
      if (high.value.trim() !== "") next[name].max = Number(high.value);
    }
    modulations = next;
    toggle.classList.toggle("on", name in modulations);
    send("modulate", modulations);  // the whole set: a later one replaces it
  }
  for (const input of [shape, rate, depth, low, high]) input.addEventListener("change", apply);
  toggle.addEventListener("click", () => {
    editor.hidden = !editor.hidden;
    toggle.setAttribute("aria-expanded", String(!editor.hidden));
  });
  head.insertBefore(toggle, head.querySelector(".learn"));  // (null: at the end)
  row.append(editor);
}
