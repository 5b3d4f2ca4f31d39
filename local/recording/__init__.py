"""Recording at the relay: exactly what a session sends to the browser, as an MP4 file, with
the catalogue and HTTP routes that serve it."""
