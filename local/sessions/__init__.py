"""A browser's session at the relay: its peer connection, the fan-out of its output tracks, and
the viewers that watch it through a share link."""
