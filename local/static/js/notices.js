// Messages that are not the session's state: a toast for a refusal the user just caused (MIDI
// denied), a banner that stays for news about the session that the badge does not carry (a
// plugin edit that did not load). Both are plain text, never HTML from a message.

const TOAST_MS = 8000;

/**
 * @param {HTMLElement} box  where notices are listed (an aria-live region)
 */
export function createNotices(box) {
  /** @type {Map<string, HTMLElement>} the shown notices, by key (one per key) */
  const shown = new Map();

  /**
   * Shows `text` under `key`, replacing what that key showed. A toast goes by itself after a
   * few seconds; a banner stays until closed or `clear`ed.
   * @param {string} key @param {string} text
   * @param {{tone?: "warn"|"bad", sticky?: boolean}} [how]
   */
  function show(key, text, { tone = "warn", sticky = false } = {}) {
    clear(key);
    const item = document.createElement("div");
    item.className = "notice";
    item.dataset.tone = tone;
    item.dataset.key = key;
    item.setAttribute("role", tone === "bad" ? "alert" : "status");
    const words = document.createElement("span");
    words.textContent = text;
    const close = document.createElement("button");
    close.type = "button";
    close.className = "icon-button";
    close.setAttribute("aria-label", "dismiss");
    close.textContent = "×";
    close.addEventListener("click", () => clear(key));
    item.append(words, close);
    box.append(item);
    shown.set(key, item);
    if (!sticky) {
      setTimeout(() => { if (shown.get(key) === item) clear(key); }, TOAST_MS);
    }
  }

  /** @param {string} key */
  function clear(key) {
    shown.get(key)?.remove();
    shown.delete(key);
  }

  return {
    show,
    clear,
    /** {key: text} of what is shown (the test hook) */
    get shown() { return Object.fromEntries([...shown].map(([k, el]) => [k, el.firstChild.textContent])); },
  };
}
