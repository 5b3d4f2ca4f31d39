"""The relay's link to the cloud app: where it is, the control socket, and each session's
WebRTC hop (kept up across failures)."""
