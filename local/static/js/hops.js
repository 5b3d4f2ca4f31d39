// The video of each hop in human terms: cloud -> relay (what the cloud sends and what
// arrives) and relay -> page (forwarded or re-encoded, what the page asks for). Every figure
// comes from the relay's stats (/api/v1/stats: `cloud_send` is the cloud's own sender,
// read through the control socket); an unknown one is "—", never a guess, and the cloud's
// figures say how old they are when they are not fresh. A tone marks only what is wrong.

/** The cloud's figures are marked stale past this age (s): fetched at most once a second. */
export const STALE_AFTER_S = 3;
/** The pacer's queue delay that means a standing queue (ms). */
export const QUEUE_WARN_MS = 100;
/** A loss share that costs picture (fraction). */
export const LOSS_WARN = 0.02;
/** The estimate under this share of the ceiling: the path carries much less than the
 * picture is set to. */
export const ESTIMATE_WARN_SHARE = 0.5;

const num = (x) => typeof x === "number" && Number.isFinite(x) ? x : null;

/** bit/s in words ("—" when unknown). */
export function rate(bps) {
  const b = num(bps);
  if (b === null) return "—";
  return b >= 1e6 ? `${(b / 1e6).toFixed(1)} Mbit/s` : `${Math.round(b / 1e3)} kbit/s`;
}

const count = (x) => num(x) === null ? "—" : String(x);
const percent = (f) => num(f) === null ? "—" : `${(f * 100).toFixed(1)} %`;
/** "video/VP8", "vp8", "h264" -> "VP8", "H264". */
const codecName = (c) => typeof c === "string" && c ? c.replace(/^video\//i, "").toUpperCase() : null;

/**
 * One figure: what it is, its value in words, a tone ("" or "warn") and a tooltip.
 * @typedef {{label: string, text: string, tone: string, title: string}} Figure
 */
const fig = (label, text, title, tone = "") => ({ label, text, title, tone });

/**
 * The cloud hop's figures from the relay's session stats `m`.
 * @param {Record<string, any>} m
 * @returns {{figures: Figure[], note: string, noteTone: string, error: string}}
 */
export function cloudHop(m) {
  const send = m.cloud_send && typeof m.cloud_send === "object" ? m.cloud_send : {};
  const v = send.video && typeof send.video === "object" ? send.video : null;
  const received = m.receive?.video ?? {};
  const ups = m.keyframes_upstream ?? {};
  const codec = codecName(m.cloud_video_codec) ?? codecName(m.video_forward?.codec);
  const out = [
    fig("codec", codec ?? "—", "the codec the cloud sends"),
    fig("bitrate", rate(m.cloud_video_bitrate), "video arriving at the relay from the cloud"),
  ];
  const estimate = num(v?.estimate_bitrate) ?? num(v?.receiver_estimate);
  const ceiling = num(v?.ceiling_bitrate);
  out.push(fig("target", rate(v?.target_bitrate),
               `the rate the cloud's encoder aims at (ceiling ${rate(ceiling)})`));
  if (v && ("estimate_bitrate" in v || num(v.receiver_estimate) !== null)) {
    const low = estimate !== null && ceiling !== null && estimate < ESTIMATE_WARN_SHARE * ceiling;
    out.push(fig("estimate", rate(estimate),
                 "the cloud's bandwidth estimate of this hop" + (low ? ": under half the ceiling, the path carries less than the picture is set to" : ""),
                 low ? "warn" : ""));
  }
  if (v && "pacer_queue_delay_ms" in v) {
    const q = num(v.pacer_queue_delay_ms);
    out.push(fig("queue", q === null ? "—" : `${Math.round(q)} ms`,
                 "how long video waits in the cloud's pacer before it is sent",
                 q !== null && q > QUEUE_WARN_MS ? "warn" : ""));
  }
  const step = num(v?.ladder_step);
  if (step !== null && step > 0) {  // the picture is cut to fit the path: say how far
    const size = num(v.send_width) && num(v.send_height) ? ` ${v.send_width}×${v.send_height}` : "";
    out.push(fig("sent as", `${num(v.send_fps) ?? "—"} fps${size}`,
                 `the cloud lowered frame rate or size to fit the path (ladder step ${step})`));
  }
  out.push(fig("keyframes", count(v?.keyframes), "keyframes the cloud encoded"));
  out.push(fig("PLIs", count(ups.sent), "keyframe requests the relay sent the cloud (the page's, coalesced, and its own)"));
  out.push(fig("NACKs", count(received.nacks_sent), "retransmissions the relay asked of the cloud"));
  const loss = num(v?.reported_loss);
  out.push(fig("loss", percent(loss), "the share of packets lost on this hop, as the relay's reports tell the cloud",
               loss !== null && loss > LOSS_WARN ? "warn" : ""));
  let note = "", noteTone = "";
  const age = num(send.age_s);
  if (!v) {
    note = send.last_error ? "cloud figures unavailable" : "cloud figures: waiting";
    noteTone = send.last_error ? "warn" : "";
  } else if (send.available === false || (age !== null && age > STALE_AFTER_S)) {
    note = `cloud figures ${age === null ? "" : Math.round(age) + " s "}old`;
    noteTone = "warn";
  }
  return { figures: out, note, noteTone, error: send.last_error ?? "" };
}

/**
 * The page hop's figures from the relay's stats `m` and the browser's own loss share.
 * @param {Record<string, any>} m @param {number|null} pageLoss
 * @returns {{figures: Figure[]}}
 */
export function pageHop(m, pageLoss) {
  const send = m.video_send ?? {};
  const mode = typeof m.page_video_mode === "string" ? m.page_video_mode : null;
  const codec = codecName(m.video_codec);
  return {
    figures: [
      fig("video", mode ?? "—", "forwarded: the cloud's own encode, not decoded at the relay; re-encoded: decoded and encoded again"),
      fig("codec", codec ?? "—", "the codec the page receives"),
      fig("bitrate", rate(m.page_video_bitrate), "video the relay sends the page"),
      fig("PLIs", count(send.plis), "keyframe requests (PLI) from the page"),
      fig("FIRs", count(send.firs), "full intra requests (FIR) from the page"),
      fig("NACKs", count(send.nacked_packets), "lost packets the page asked of the relay: answered from the relay's packet cache, never from the cloud"),
      fig("loss", percent(pageLoss), "the share of video packets the page lost, last 10 s",
          num(pageLoss) !== null && pageLoss > LOSS_WARN ? "warn" : ""),
    ],
  };
}
