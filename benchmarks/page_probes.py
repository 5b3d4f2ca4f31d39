"""What the browser benchmarks (beat_phase.py, browser_av_sync.py) run in the page to see
what it plays, as JavaScript source to splice into their own scripts: the same probe in
both, so their figures mean the same thing."""

from __future__ import annotations

import json

# An AudioWorklet module: posts the context time of each click's onset (the first sample
# above 0.25), then stays quiet for QUIET s so one click is not counted twice.
_ONSETS = """registerProcessor('onsets', class extends AudioWorkletProcessor {
  constructor() { super(); this.quietUntil = 0; }
  process(inputs) {
    const x = inputs[0][0];
    if (x) for (let i = 0; i < x.length; i++) {
      const t = currentTime + i / sampleRate;
      if (Math.abs(x[i]) > 0.25) {
        if (t >= this.quietUntil) this.port.postMessage(t);
        this.quietUntil = t + QUIET;
      }
    }
    return true;
  }
});"""

#: ``(video) => () => bool``: whether the frame the <video> shows now is bright (its red
#: channel's mean over a 16x16 copy above 128): a flash
BRIGHTNESS = """(video) => {
  const canvas = new OffscreenCanvas(16, 16), g = canvas.getContext('2d', {willReadFrequently: true});
  return () => {
    g.drawImage(video, 0, 0, 16, 16);
    const px = g.getImageData(0, 0, 16, 16).data;
    let sum = 0; for (let i = 0; i < px.length; i += 4) sum += px[i];
    return sum / (px.length / 4) > 128;
  };
}"""


def onsets_worklet(quiet: float) -> str:
    """The onsets worklet's source as a JavaScript string literal; ``quiet`` (s) must be
    shorter than the time between two clicks (beat_phase: a beat; av-sync: a second)."""
    return json.dumps(_ONSETS.replace("QUIET", repr(quiet)))
