// The performer's numbers: the relay's raw per-session counters and the browser's own WebRTC
// statistics turned into a few figures in human terms (latency, fps, sync, bitrate,
// generator speed, drops in the last minute, the page hop's video loss), plus whether media
// flows at all. Each hop's video figures are put in words by hops.js.

/** Generator speed is measured over this much history: long enough to span the bursts a
 * chunked generator makes (bursty-av: 2 s of media per call), short enough to follow a change. */
const SPEED_WINDOW_MS = 9000;
const SPEED_MIN_MS = 6000;
const DROP_WINDOW_MS = 60000;
/** The page hop's video loss share is measured over this much history. */
const LOSS_WINDOW_MS = 10000;

/** Drop counters the relay keeps, by what they count. */
const DROPPED_FRAMES = ["video_late_frames", "video_overflow_frames", "pending_dropped",
                        "camera_frames_dropped"];
const DROPPED_AUDIO_MS = ["audio_late_ms", "audio_overflow_ms", "audio_reset_ms"];

const sum = (obj, keys) => keys.reduce((n, k) => n + (Number(obj?.[k]) || 0), 0);

/**
 * @param {{produces_video: boolean, produces_audio: boolean, accepts_video: boolean,
 *          fps?: number|null}} pipeline
 */
export function createFigures(pipeline) {
  /** @type {{t: number, frames: number, droppedFrames: number, droppedAudioMs: number,
   *          underruns: number, bytes: number, browserDropped: number}[]} */
  let history = [];
  let lastFrames = -1;
  let lastMediaAt = null;
  let firstMediaAt = Infinity;
  let jitter = { delay: 0, count: 0, avgMs: null };
  /** Resumed (after a pause or an outage) and no new media since: what is awaited, in
   * words, or null. The media age then counts from the resume, not from the gap. */
  let resuming = null;

  /** The counter that says new media arrived: video frames when there is video (the cloud
   * fills audio gaps with silence, so audio keeps flowing through a generator stall). */
  const mediaCount = (m) => pipeline.produces_video ? m.video_frames_in : m.audio_frames_in;

  /**
   * One poll's worth. `report` is the peer's RTCStatsReport (or null).
   * @param {Record<string, any>} m @param {RTCStatsReport|null} report @param {number} now
   */
  function add(m, report, now) {
    const rtc = readReport(report);
    const frames = Number(mediaCount(m)) || 0;
    if (frames > lastFrames) {
      if (lastFrames >= 0 || frames > 0) {
        lastMediaAt = now;
        resuming = null;
      }
      if (frames > 0 && firstMediaAt === Infinity) firstMediaAt = now;
      lastFrames = frames;
    }
    history.push({ t: now, frames, droppedFrames: sum(m, DROPPED_FRAMES),
                   droppedAudioMs: sum(m, DROPPED_AUDIO_MS), underruns: Number(m.audio_underruns) || 0,
                   bytes: rtc.bytes, browserDropped: rtc.framesDropped,
                   videoLost: rtc.videoLost, videoReceived: rtc.videoReceived });
    history = history.filter((h) => now - h.t <= DROP_WINDOW_MS);
    if (rtc.jitterCount > jitter.count) {
      jitter = { delay: rtc.jitterDelay, count: rtc.jitterCount,
                 avgMs: (rtc.jitterDelay - jitter.delay) / (rtc.jitterCount - jitter.count) * 1000 };
    }
    return summary(m, rtc, now);
  }

  function summary(m, rtc, now) {
    const first = history[0], last = history[history.length - 1];
    // from the first media on: the wait for a model's first output is not its speed
    const recent = history.find((h) => now - h.t <= SPEED_WINDOW_MS && h.t >= firstMediaAt) || last;
    const prev = history.length > 2 ? history[history.length - 3] : first;
    const span = last.t - recent.t;
    let speed = null;
    // a camera-driven pipeline runs at the camera's rate, not its declared one: no verdict
    if (pipeline.produces_video && !pipeline.accepts_video && pipeline.fps && span >= SPEED_MIN_MS
        && lastMediaAt !== null) {
      speed = (last.frames - recent.frames) / (pipeline.fps * span / 1000);
    }
    const bitrate = last.t > prev.t ? (last.bytes - prev.bytes) * 8 / (last.t - prev.t) : null;  // kbit/s
    const lossFrom = history.find((h) => now - h.t <= LOSS_WINDOW_MS) || first;
    const lost = last.videoLost - lossFrom.videoLost;
    const expected = lost + last.videoReceived - lossFrom.videoReceived;
    const relayDelay = Number(m.playout_delay_ms) || 0;
    const timing = m.timing && typeof m.timing === "object" ? Object.values(m.timing) : [];
    return {
      video: !!pipeline.produces_video,
      camera: !!pipeline.accepts_video,
      mediaSeen: lastMediaAt !== null,
      mediaAgeMs: lastMediaAt === null ? null : now - lastMediaAt,
      resuming,
      speed,
      fps: rtc.fps,
      bitrateKbps: bitrate,
      // the page hop's video packets lost, last 10 s (a negative count: duplicates)
      pageLoss: expected > 0 ? Math.max(0, lost) / expected : null,
      latencyMs: relayDelay + (jitter.avgMs ?? 0) + (rtc.rttMs ?? 0) / 2,
      sync: !(pipeline.produces_video && pipeline.produces_audio) ? null
        : timing.length < 2 ? "waiting"
        : Number(m.tracks_timed_by_arrival) ? "not locked" : "in sync",
      drops: {
        frames: last.droppedFrames - first.droppedFrames + last.browserDropped - first.browserDropped,
        audioMs: last.droppedAudioMs - first.droppedAudioMs,
        underruns: last.underruns - first.underruns,
      },
      resolution: rtc.width ? `${rtc.width}×${rtc.height}` : null,
    };
  }

  /** Measures the generator's speed afresh from the next new media on: a pause's held
   * picture is not slowness (without this the page said "slower than real time" for the
   * 9 s window after every Resume). */
  function restartSpeed() {
    firstMediaAt = Infinity;
  }

  /**
   * Media is expected again from `now` (the user resumed, the cloud came back): the gap is
   * neither a stall nor slowness, so the media age counts from here and the speed is
   * measured afresh.
   * @param {number} now @param {{title: string, detail: string, graceMs: number}} why
   */
  function resumed(now, why) {
    if (lastMediaAt !== null) {
      lastMediaAt = now;
      resuming = why;
    }
    restartSpeed();
  }

  return { add, restartSpeed, resumed };
}

/** The few numbers taken from the browser's own statistics. */
function readReport(report) {
  const out = { bytes: 0, fps: null, framesDropped: 0, jitterDelay: 0, jitterCount: 0,
                rttMs: null, width: 0, height: 0, videoLost: 0, videoReceived: 0 };
  if (!report) return out;
  let videoJitter = null;
  report.forEach((s) => {
    if (s.type === "inbound-rtp") {
      out.bytes += s.bytesReceived || 0;
      if (s.kind === "video") {
        out.fps = s.framesPerSecond ?? out.fps;
        out.framesDropped += s.framesDropped || 0;
        out.width = s.frameWidth || 0;
        out.height = s.frameHeight || 0;
        out.videoLost += s.packetsLost || 0;
        out.videoReceived += s.packetsReceived || 0;
        videoJitter = [s.jitterBufferDelay || 0, s.jitterBufferEmittedCount || 0];
      } else if (videoJitter === null) {
        out.jitterDelay = s.jitterBufferDelay || 0;
        out.jitterCount = s.jitterBufferEmittedCount || 0;
      }
    } else if (s.type === "candidate-pair" && s.nominated && s.currentRoundTripTime != null) {
      out.rttMs = s.currentRoundTripTime * 1000;
    }
  });
  if (videoJitter) [out.jitterDelay, out.jitterCount] = videoJitter;
  return out;
}
