// The relay's per-session figures, polled twice a second while a session is up (state
// changes show within a second of their cause). The poll also
// notices when the relay no longer knows our session or cannot be reached, which the
// connection's own state may show late or not at all.

import { api } from "./api.js";

// Polls in a row without our session before it counts as ended: one miss can be a race with
// the relay's own bookkeeping.
const GONE_AFTER = 4;
// Failed polls in a row before the relay counts as unreachable: it may be restarting.
const UNREACHABLE_AFTER = 10;
const POLL_MS = 500;

/**
 * Starts polling for `sessionId`. Returns the function that stops it; a poll still in flight
 * then counts for nothing, so it cannot write over the pane or restart a newer session.
 * @param {string} sessionId
 * @param {object} how
 * @param {(figures: object) => void} how.show  the session's figures, as the relay gives them
 * @param {(reason: string) => void} how.lost  the session is gone: start a new one
 * @returns {() => void}
 */
export function watchStats(sessionId, { show, lost }) {
  let stopped = false;
  let missing = 0;  // polls in a row that did not find the session (or failed)
  const abort = new AbortController();  // Stop cancels a poll in flight: it would 404

  async function poll() {
    let mine;
    try {
      // only this page knows its session's full id, and only it may read the session's figures
      mine = await api(`/api/v1/webrtc/offer/${sessionId}`, { signal: abort.signal });
      if (stopped) return;
    } catch (err) {
      if (stopped) return;
      if (err.status !== 404) {
        if (++missing >= UNREACHABLE_AFTER) lost("relay unreachable");
        return;
      }
    }
    // the relay no longer has our session (it was restarted, or ended it): start anew
    missing = mine ? 0 : missing + 1;
    if (missing >= GONE_AFTER) {
      lost("the relay ended the session");
      return;
    }
    show(mine);
  }

  const timer = setInterval(poll, POLL_MS);
  return () => {
    stopped = true;
    clearInterval(timer);
    abort.abort();
  };
}

