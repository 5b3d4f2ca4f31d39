// Inline SVG icons (no files to fetch, they take the text colour): 24x24, stroked.

const PATHS = {
  play: '<path d="M7 5v14l12-7z" fill="currentColor" stroke="none"/>',
  stop: '<rect x="6" y="6" width="12" height="12" rx="1.5" fill="currentColor" stroke="none"/>',
  mute: '<path d="M4 9h4l5-4v14l-5-4H4z"/><path d="M17 9l5 6M22 9l-5 6"/>',
  sound: '<path d="M4 9h4l5-4v14l-5-4H4z"/><path d="M16.5 8.5a5 5 0 0 1 0 7M19 6a8.5 8.5 0 0 1 0 12"/>',
  fullscreen: '<path d="M4 9V4h5M20 9V4h-5M4 15v5h5M20 15v5h-5"/>',
  popout: '<rect x="3" y="6" width="13" height="13" rx="1.5"/><path d="M13 3h8v8M21 3l-9 9"/>',
  midi: '<circle cx="12" cy="12" r="8.5"/><path d="M12 12l4-4"/><circle cx="8" cy="15" r=".9"/>' +
        '<circle cx="16" cy="15" r=".9"/><circle cx="12" cy="17" r=".9"/>',
  plus: '<path d="M12 5v14M5 12h14"/>',
  pause: '<rect x="6" y="5" width="4" height="14" rx="1" fill="currentColor" stroke="none"/>' +
         '<rect x="14" y="5" width="4" height="14" rx="1" fill="currentColor" stroke="none"/>',
  share: '<circle cx="6" cy="12" r="2.5"/><circle cx="18" cy="6" r="2.5"/><circle cx="18" cy="18" r="2.5"/>' +
         '<path d="M8.2 10.9l7.6-3.8M8.2 13.1l7.6 3.8"/>',
  close: '<path d="M6 6l12 12M18 6L6 18"/>',
  keyboard: '<rect x="2" y="6" width="20" height="12" rx="2"/><path d="M6 10h.01M10 10h.01M14 10h.01M18 10h.01M7 14h10"/>',
};

/** The icon's SVG markup, hidden from screen readers (the button carries the words). */
export function icon(name) {
  return `<svg class="icon" viewBox="0 0 24 24" width="18" height="18" fill="none" stroke="currentColor" ` +
    `stroke-width="2" stroke-linecap="round" stroke-linejoin="round" aria-hidden="true">${PATHS[name]}</svg>`;
}
