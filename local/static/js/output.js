// The output as a performer uses it: at its native aspect ratio, fullscreen, and in a pop-out
// window that can be dragged to a second screen (a projector) while this page stays the
// control surface.

/**
 * @param {HTMLElement} stage  the element that goes fullscreen (holds the video)
 * @param {HTMLVideoElement} video
 */
export function createOutput(stage, video) {
  let popout = null;

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
    return popout;
  }

  /** A new session's stream: the pop-out follows it. */
  function show(stream) {
    video.srcObject = stream;
    if (popout && !popout.closed) popout.document.getElementById("popout-video").srcObject = stream;
  }

  return { toggleFullscreen, openPopout, show };
}
