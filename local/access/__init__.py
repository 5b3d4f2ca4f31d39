"""Who may drive the relay: its own page only (host names, origin, content type), and
beyond this machine only the holder of its token (or of a share link, to watch)."""
