// A stereo level meter on the stream the page plays: peak per channel, with a fall-off so a
// beat is readable. Web AudioAnalyser nodes read the audio; nothing is routed to the speakers
// (the <video> element plays it, muted or not).

const FALL_PER_SECOND = 1.5;  // full scale to nothing in about 0.7 s
const TICK_MS = 50;

/**
 * @param {HTMLElement[]} bars  the left and right bars (their --level is set, 0..1)
 */
export function createMeter(bars) {
  let ctx = null;
  let nodes = null;
  let timer = null;
  let shown = [0, 0];
  let last = performance.now();
  const buf = new Float32Array(1024);

  /** Meters `stream`'s audio from now on (once it has an audio track); null rests it. */
  function attach(stream) {
    detach();
    if (!stream) return;
    nodes = { stream, source: null, analysers: [] };
    timer = setInterval(tick, TICK_MS);
  }

  /** Tracks reach the stream after the answer (added by script, so no event): look each tick. */
  function wire() {
    if (nodes.source || !nodes.stream.getAudioTracks().length) return;
    ctx ||= new AudioContext();
    ctx.resume().catch(() => {});
    const source = ctx.createMediaStreamSource(nodes.stream);
    const split = ctx.createChannelSplitter(2);
    const analysers = [ctx.createAnalyser(), ctx.createAnalyser()];
    source.connect(split);
    analysers.forEach((a, i) => { a.fftSize = 1024; split.connect(a, i); });
    Object.assign(nodes, { source, analysers });
  }

  function detach() {
    clearInterval(timer);
    timer = null;
    nodes?.source?.disconnect();
    nodes = null;
    shown = [0, 0];
    draw();
  }

  function tick() {
    const now = performance.now();
    const fall = FALL_PER_SECOND * (now - last) / 1000;
    last = now;
    if (nodes) wire();
    const peaks = (nodes?.analysers || []).map((a) => {
      a.getFloatTimeDomainData(buf);
      let peak = 0;
      for (const x of buf) peak = Math.max(peak, Math.abs(x));
      return Math.min(1, peak);
    });
    if (peaks.length === 1) peaks.push(peaks[0]);
    shown = [0, 1].map((i) => Math.max(peaks[i] ?? 0, shown[i] - fall));
    draw();
  }

  function draw() {
    bars.forEach((bar, i) => {
      bar.style.setProperty("--level", String(shown[i]));
      bar.classList.toggle("hot", shown[i] > 0.9);
    });
  }

  return {
    attach,
    detach,
    /** [left, right] peaks as shown, 0..1 */
    get levels() { return [...shown]; },
  };
}
