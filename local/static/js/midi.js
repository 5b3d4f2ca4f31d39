// MIDI learn (Web MIDI): arm a control, move a knob or fader, and that controller drives the
// control from then on. Mappings are kept per pipeline in the browser (localStorage), since
// a controller layout belongs to a performer's set, not to the relay.

const STORE = "scope-relay.midi.";

/** Why Web MIDI cannot be had here, in words a performer can act on; null when it can. */
function unavailable() {
  if (navigator.requestMIDIAccess) return null;
  if (!window.isSecureContext) {
    return "MIDI needs a secure page: open the relay at http://127.0.0.1 or localhost on this machine";
  }
  return "this browser has no Web MIDI: use Chrome, Edge or Firefox for MIDI learn";
}

/** A failed requestMIDIAccess() in words. */
function refusedInWords(err) {
  if (err?.name === "NotAllowedError" || err?.name === "SecurityError") {
    return "the browser refused MIDI access: allow MIDI for this site (the icon in the address bar), then press the knob again";
  }
  return `MIDI is not available: ${err?.message || err}`;
}

/**
 * @param {{move: (name: string, fraction: number) => void, changed: () => void,
 *          refused: (name: string, why: string) => void}} hooks
 *   move: a mapped controller moved (0..1); changed: learning or the mappings changed;
 *   refused: learning `name` cannot work, and why (shown, never silent)
 */
export function createMidi(hooks) {
  let pipelineId = null;
  /** @type {Map<string, string>} "channel:controller" -> parameter name */
  let mapping = new Map();
  let learning = null;
  let access = null;
  let accessTried = false;
  /** why the last request for Web MIDI failed, or null */
  let error = null;

  function load(id) {
    pipelineId = id;
    learning = null;
    try {
      mapping = new Map(Object.entries(JSON.parse(localStorage.getItem(STORE + id) || "{}")));
    } catch {
      mapping = new Map();
    }
    if (mapping.size) connect();  // saved mappings work without another click
    hooks.changed();
  }

  function save() {
    localStorage.setItem(STORE + pipelineId, JSON.stringify(Object.fromEntries(mapping)));
  }

  /** Asks for Web MIDI (on its own, once; on a click, again); listens on every input,
   * present and future. */
  async function connect(clicked = false) {
    if (access || (accessTried && !clicked)) return access;
    error = unavailable();
    if (error) return null;
    accessTried = true;
    try {
      access = await navigator.requestMIDIAccess();
    } catch (err) {
      error = refusedInWords(err);
      return null;
    }
    error = null;
    const listen = () => access.inputs.forEach((input) => { input.onmidimessage = onMessage; });
    listen();
    access.onstatechange = listen;
    return access;
  }

  /** Control change (0xB0) maps and moves; note on/off (0x90/0x80) toggles. */
  function onMessage(event) {
    const [status, number, value = 0] = event.data;
    const kind = status & 0xf0;
    if (kind !== 0xb0 && kind !== 0x90 && kind !== 0x80) return;
    const key = `${kind === 0xb0 ? "cc" : "note"}:${status & 0x0f}:${number}`;
    if (learning) {
      for (const [k, name] of mapping) if (name === learning) mapping.delete(k);
      mapping.set(key, learning);
      learning = null;
      save();
      hooks.changed();
    }
    const name = mapping.get(key);
    if (!name) return;
    const fraction = kind === 0x80 ? 0 : value / 127;
    hooks.move(name, fraction);
  }

  /** Arms `name` (again: disarms). Needs a click, which Web MIDI's permission wants anyway. */
  async function learn(name) {
    learning = learning === name ? null : name;
    hooks.changed();
    if (!learning) return;
    if (!(await connect(true))) {
      learning = null;
      hooks.changed();
      hooks.refused(name, error || "MIDI is not available");
    }
  }

  return {
    load,
    learn,
    get learning() { return learning; },
    get mapped() { return new Set(mapping.values()); },
    /** why MIDI learn failed last, or null */
    get error() { return error; },
    /** `{"cc:0:7": "frequency"}` for the test hook */
    get mapping() { return Object.fromEntries(mapping); },
  };
}
