// The output as a performer uses it: at its native aspect ratio, fullscreen, and in a pop-out
// window that can be dragged to a second screen (a projector) while this page stays the
// control surface.

/**
 * @param {HTMLElement} stage  the element that goes fullscreen (holds the video)
 * @param {HTMLVideoElement} video
 */
export function createOutput(stage, video) {
  let popout = null;
  let held = false;

  // the stage takes the picture's own shape, so it is never stretched, only scaled
  video.addEventListener("resize", () => {
    if (video.videoWidth && video.videoHeight) {
      stage.style.setProperty("--aspect", `${video.videoWidth} / ${video.videoHeight}`);
    }
  });

  function toggleFullscreen() {
    if (document.fullscreenElement) return document.exitFullscreen().catch(() => {});
    return stage.requestFullscreen?.().catch(() => {});
  }

  /** Opens (or focuses) the output window; it shows the same stream, silently. */
  function openPopout() {
    if (popout && !popout.closed) {
      popout.focus();
      return popout;
    }
    popout = window.open("", "scope-relay-output", "popup,width=960,height=540");
    if (!popout) return null;  // blocked: the browser says so itself
    const doc = popout.document;
    doc.title = "scope-relay output";
    doc.body.style.cssText = "margin:0;background:#000;height:100vh;display:flex";
    const out = doc.createElement("video");
    out.id = "popout-video";
    out.autoplay = true;
    out.muted = true;  // sound stays with the control page (and its mute)
    out.playsInline = true;
    out.style.cssText = "width:100%;height:100%;object-fit:contain";
    out.addEventListener("dblclick", () => out.requestFullscreen?.().catch(() => {}));
    doc.body.replaceChildren(out);
    out.srcObject = video.srcObject;
    if (held) out.pause();
    return popout;
  }

  const videos = () => [video, popout && !popout.closed && popout.document.getElementById("popout-video")]
    .filter(Boolean);

  /** A new session's stream: the pop-out follows it (and a pause holds it too). */
  function show(stream) {
    for (const v of videos()) v.srcObject = stream;
    hold(held);
  }

  /** A track just joined the shown stream: a held output keeps it silent. */
  function adopt(track) {
    if (track.kind === "audio") track.enabled = !held;
  }

  /**
   * Pause at the click, not when the media already on its way has played out: the picture
   * holds on the frame shown and the sound (speakers and level meter) goes silent at once;
   * `false` plays the live media again.
   * @param {boolean} on
   */
  function hold(on) {
    held = on;
    for (const t of video.srcObject?.getAudioTracks?.() ?? []) t.enabled = !on;
    for (const v of videos()) {
      if (on) v.pause();
      else if (v.srcObject) v.play().catch(() => {});
    }
  }

  /** No picture any more (a failed pipeline): the last frame is not left frozen there. */
  function clear() {
    for (const v of videos()) v.srcObject = null;
  }

  return { toggleFullscreen, openPopout, show, adopt, hold, clear, get held() { return held; } };
}
