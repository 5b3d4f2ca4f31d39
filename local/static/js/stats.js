// The relay's per-session figures, polled once a second while a session is up. The poll also
// notices when the relay no longer knows our session or cannot be reached, which the
// connection's own state may show late or not at all.

import { api } from "./api.js";

// Always shown, when the relay reports them.
const KEYS = ["connection", "offset_ms", "playout_delay_ms", "audio_queue_ms", "video_queue_ms",
              "audio_frames_sent", "video_frames_sent"];
// Every drop the relay counts, shown once it is non-zero.
const DROPS = ["audio_underruns", "audio_late_ms", "audio_overflow_ms", "audio_reset_ms",
               "audio_gap_ms", "audio_startup_skipped_ms", "video_late_frames", "video_overflow_frames",
               "pending_dropped", "clipped_samples", "nonfinite_samples", "camera_frames_dropped",
               "parameters_dropped", "bad_parameter_messages", "cloud_reconnects",
               "tracks_timed_by_arrival"];
// Polls in a row without our session before it counts as ended: one miss can be a race with
// the relay's own bookkeeping.
const GONE_AFTER = 2;
// Failed polls in a row before the relay counts as unreachable: it may be restarting.
const UNREACHABLE_AFTER = 5;

/**
 * Starts polling for `sessionId`. Returns the function that stops it; a poll still in flight
 * then counts for nothing, so it cannot write over the pane or restart a newer session.
 * @param {string} sessionId
 * @param {object} how
 * @param {(text: string) => void} how.show   puts the text on the page
 * @param {(reason: string) => void} how.lost  the session is gone: start a new one
 * @param {() => number} how.restarts          reconnects so far, shown when non-zero
 * @returns {() => void}
 */
export function watchStats(sessionId, { show, lost, restarts }) {
  let stopped = false;
  let missing = 0;  // polls in a row that did not find the session (or failed)

  async function poll() {
    let mine;
    try {
      // only this page knows its session's full id, and only it may read the session's figures
      mine = await api(`/api/v1/webrtc/offer/${sessionId}`);
      if (stopped) return;
    } catch (err) {
      if (stopped) return;
      if (err.status !== 404) {
        show(err.message);
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
    show(describe(mine, restarts()));
  }

  const timer = setInterval(poll, 1000);
  return () => {
    stopped = true;
    clearInterval(timer);
  };
}

/** The pane's text: the usual figures, the non-zero drops, and how often the page reconnected. */
function describe(mine = {}, restarts) {
  const lines = KEYS.filter((k) => k in mine).map((k) => `${k}: ${mine[k]}`);
  lines.push(...DROPS.filter((k) => mine[k]).map((k) => `${k}: ${mine[k]}`));
  if (restarts) lines.push(`reconnects: ${restarts}`);
  return lines.join("\n");
}
