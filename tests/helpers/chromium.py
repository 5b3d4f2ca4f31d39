"""Debian's Chromium as the tests and benchmarks drive it: these flags, a fresh profile, no
browser download (docs/architecture.md, Measuring)."""

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
    "--autoplay-policy=no-user-gesture-required", "--no-sandbox", "--disable-gpu",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--no-first-run", "--allow-loopback-in-peer-connection", "--disable-quic",
]
