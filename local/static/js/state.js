// The one place that decides what the page says is happening. Every other module reports
// facts (the session's phase, the cloud's status, whether media flows and how fast); this
// turns them into one state, so the badge, the buttons and the tests never disagree.

/** No new media for this long while playing: the generator (or the path) has stalled. */
export const STALL_MS = 2000;
/** Below this share of real time the generator cannot keep up: say so. */
export const SLOW_BELOW = 0.95;
/** What the page waits for after Resume: the held media comes at once. */
export const AFTER_RESUME = { title: "Resuming", detail: "waiting for the media to flow again", graceMs: STALL_MS };
/** ... and after an outage: the relay builds a new cloud hop first (a few seconds). */
export const AFTER_RECOVERY = { title: "Reconnected", detail: "the cloud is back: waiting for its media",
                                graceMs: 10000 };

/**
 * @typedef {object} Facts
 * @property {"idle"|"connecting"|"live"|"retrying"|"stopped"|"failed"} phase  the session's
 * @property {string|null} reason          why it is retrying or failed
 * @property {string|null} connection      the RTCPeerConnection's connectionState
 * @property {{state: string, last_error?: string}|null} cloud  GET /api/v1/cloud/status
 * @property {boolean} relayReachable      the last poll of the relay answered
 * @property {string|null} [locked]       the relay refused the page its API (401: it is
 *   served on the LAN and this browser has not opened its token URL), in its words
 * @property {boolean} mediaSeen           media has arrived in this session
 * @property {number|null} mediaAgeMs      since media last arrived
 * @property {number|null} speed           generated media seconds per wall second
 * @property {string|null} pipelineFailed  the pipeline's own failure, in its words
 * @property {{phase?: string, fraction?: number}|null} loading  the cloud loading the chain
 * @property {boolean} [pipelinesLoaded]  the page has the cloud's pipeline list
 * @property {boolean} [paused]           the user paused the session (`paused`)
 * @property {{title: string, detail: string, graceMs: number}|null} [resuming]  media is
 *   expected again (AFTER_RESUME, AFTER_RECOVERY) and none has come since: the media age
 *   counts from then, and the gap before is no stall
 */

/**
 * @typedef {object} State
 * @property {string} id      stable name (tests and CSS): idle, connecting, loading, waiting,
 *   playing, paused, slow, stalled, unreachable, refused, reconnecting, relay-down, locked,
 *   failed, stopped
 * @property {string} title   a few words
 * @property {string} detail  the reason or the figure, in words ("" when none)
 * @property {"ok"|"warn"|"bad"|"idle"|"busy"} tone
 * @property {Hint} [hint]   what to do next, where the page is at a dead end
 */

/**
 * The next step at a dead end, shown over the output: lines of words, each with an optional
 * command or variable to type (shown as code) and words after it.
 * @typedef {{title: string, steps: [string, string?, string?][], note?: string}} Hint
 */

/** A connection error in words a performer can act on (aiohttp's are for developers). */
export function inWords(error) {
  if (!error) return "";
  const host = error.match(/Cannot connect to host ([^\s]+?)(?: ssl:\S+)?(?: \[|$)/);
  if (host) return `nothing answers at ${host[1]}`;
  return error;
}

/** After a failure, what the buttons offer. */
const AGAIN = ["Press Start to try again (or pick another pipeline first)."];

/** A relay with no cloud app at its address: the three ways to give it one. */
export function noCloudHint(url) {
  return {
    title: "No cloud app answers this relay",
    steps: [
      ["Start one on this machine (the relay finds it by itself):", "scope-relay cloud"],
      ["or stop this relay and run both in one:", "scope-relay demo"],
      ["or point the relay at a cloud app elsewhere:", "scope-relay local --cloud ws://HOST:8001/ws"],
      ["or set", "SCOPE_CLOUD_APP_ID", "(owner/app or a ws:// URL) before starting the relay"],
    ],
    note: `This relay tries ${url || "its configured address"} and keeps trying: the page follows by itself.`,
  };
}

/** A key the cloud app refuses: which variable carries it. */
export const REFUSED_HINT = {
  title: "The cloud app wants another key",
  steps: [
    ["Give the relay the key the cloud app was started with (its SCOPE_CLOUD_API_KEY):",
     "SCOPE_CLOUD_API_KEY=<key> scope-relay local"],
  ],
  note: "Then restart the relay; this page follows by itself.",
};

/** @param {{state: string, last_error?: string, url?: string}|null} cloud */
function cloudProblem(cloud) {
  if (!cloud || ["ready", "idle"].includes(cloud.state)) return null;
  const why = inWords(cloud.last_error);
  if (cloud.state === "refused" && why.startsWith("no cloud app at ")) {  // a 404 there
    return { id: "no-cloud", title: "No cloud app", detail: why, tone: "bad", hint: noCloudHint(cloud.url) };
  }
  if (cloud.state === "refused") {
    return { id: "refused", title: "Cloud refused the key", detail: why, tone: "bad", hint: REFUSED_HINT };
  }
  if (cloud.state === "connecting" && why.startsWith("nothing answers at ")) {
    // never connected, and nothing listens there (or the name does not resolve): a dead end
    // until someone starts a cloud app or points the relay elsewhere
    const detail = cloud.url ? `nothing answers at ${cloud.url}` : why;
    return { id: "no-cloud", title: "No cloud app", detail, tone: "bad", hint: noCloudHint(cloud.url) };
  }
  if (cloud.state === "connecting") {
    return { id: "connecting", title: "Connecting to the cloud", detail: why, tone: "busy" };
  }
  if (cloud.state === "closed") {
    return { id: "unreachable", title: "Cloud connection closed", detail: why, tone: "bad" };
  }
  // reconnecting, error: the socket is down and the relay keeps trying (or gave up)
  return { id: "unreachable", title: "Cloud unreachable — reconnecting",
           detail: why || "the control connection dropped", tone: "bad" };
}

/**
 * @param {Facts} f
 * @returns {State}
 */
export function deriveState(f) {
  if (!f.relayReachable) {
    return { id: "relay-down", title: "Relay unreachable", tone: "bad",
             detail: "is scope-relay still running?" };
  }
  if (f.locked) {
    return { id: "locked", title: "This relay needs its token", tone: "bad",
             detail: "open the address with ?token= that scope-relay printed" };
  }
  const cloud = cloudProblem(f.cloud);
  if (f.phase === "stopped") return { id: "stopped", title: "Stopped", detail: "", tone: "idle" };
  if (f.phase === "failed" && !f.pipelineFailed) {
    return { id: "failed", title: "Could not start", detail: f.reason || "", tone: "bad",
             hint: { title: "The session did not start", steps: [AGAIN] } };
  }
  if (f.phase === "idle") {
    if (cloud) return cloud;
    if (f.pipelinesLoaded === false) {
      return { id: "connecting", title: "Asking the cloud for its pipelines", detail: "", tone: "busy" };
    }
    return { id: "idle", title: "Ready", detail: "pick a pipeline and press Start", tone: "idle" };
  }
  // a session is wanted from here on
  if (f.pipelineFailed) {  // (the session ends on it: phase "failed" soon follows)
    return { id: "failed", title: "Pipeline failed", detail: f.pipelineFailed, tone: "bad",
             hint: { title: "The pipeline stopped with an error", steps: [AGAIN] } };
  }
  if (cloud) return cloud;
  if (f.phase === "retrying") {
    return { id: "reconnecting", title: "Reconnecting", detail: f.reason || "", tone: "warn" };
  }
  if (f.phase === "live" && f.connection !== "connected") {
    return { id: "reconnecting", title: "Connection interrupted", tone: "warn",
             detail: `the browser's connection is ${f.connection || "gone"}` };
  }
  if (f.phase === "connecting" || f.connection !== "connected") {
    if (f.loading && f.loading.fraction != null && f.loading.fraction < 1) {
      const pct = Math.round(f.loading.fraction * 100);
      return { id: "loading", title: "Loading the pipeline",
               detail: `${f.loading.phase || "loading"} ${pct}%`, tone: "busy" };
    }
    return { id: "connecting", title: "Connecting", detail: "", tone: "busy" };
  }
  if (!f.mediaSeen) {
    return { id: "waiting", title: "Waiting for the first media", detail: "", tone: "busy" };
  }
  // paused on purpose: the held picture and the silence are not a stall
  if (f.paused) {
    return { id: "paused", title: "Paused", detail: "picture held, sound silent: Resume to go on",
             tone: "idle" };
  }
  // just resumed (or recovered): until media flows again, or has not for the grace (a real
  // stall), the page is waiting for it, not stalled
  if (f.resuming && !(f.mediaAgeMs != null && f.mediaAgeMs > f.resuming.graceMs)) {
    return { id: "waiting", title: f.resuming.title, detail: f.resuming.detail, tone: "busy" };
  }
  if (f.mediaAgeMs != null && f.mediaAgeMs > STALL_MS) {
    return { id: "stalled", title: "Stalled", tone: "warn",
             detail: `no new media for ${(f.mediaAgeMs / 1000).toFixed(0)} s` };
  }
  if (f.speed != null && f.speed < SLOW_BELOW) {
    return { id: "slow", title: "Generator slower than real time", tone: "warn",
             detail: `generating at ${f.speed.toFixed(1)}x real time` };
  }
  return { id: "playing", title: "Playing", detail: "", tone: "ok" };
}
