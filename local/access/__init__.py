"""Who may drive the relay: its own page only (host names, origin, content type)."""
