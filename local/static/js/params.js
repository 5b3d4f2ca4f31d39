// The pipeline's parameters as inputs on the page. What the user sets is kept here, sent live
// while a session is open, and handed to every new session so a reconnect keeps the settings.

/** @type {Record<string, unknown>} values set on the page for the shown pipeline */
let values = {};
/** @type {RTCDataChannel | null} the live session's "parameters" channel, if any */
let channel = null;

// Only these types have an input here; the rest keep the pipeline's defaults.
const EDITABLE = ["number", "integer", "prompts"];

/**
 * Shows `pipeline`'s parameters in `box` and forgets what was set for the one shown before:
 * another pipeline starts from its own defaults, not the last one's settings.
 * @param {HTMLElement} box
 * @param {{params?: Record<string, {type: string, default?: any, description?: string}>}} pipeline
 */
export function showParams(box, pipeline) {
  values = {};
  box.replaceChildren();
  for (const [name, spec] of Object.entries(pipeline.params || {})) {
    if (!EDITABLE.includes(spec.type)) continue;
    const label = document.createElement("label");
    label.textContent = name;
    const input = document.createElement("input");
    input.name = name;
    if (spec.type === "prompts") {
      input.value = (spec.default || []).map((x) => x.text).join(", ");
    } else {
      input.type = "number";
      input.step = "any";
      input.value = spec.default;
    }
    input.title = spec.description || "";
    input.addEventListener("change", () => setParam(name, spec.type, input.value));
    label.append(input);
    box.append(label);
  }
}

/** Records a value and, if a session is open, sends it now. */
function setParam(name, type, raw) {
  const value = type === "prompts" ? [{ text: raw, weight: 1 }] : Number(raw);
  values[name] = value;
  if (channel?.readyState === "open") channel.send(JSON.stringify({ [name]: value }));
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
