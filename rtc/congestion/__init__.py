"""Congestion control for the video we send: a bandwidth estimate (:mod:`.estimate`),
a pacer that spreads each frame's packets at a rate (:mod:`.pacer`) and the encoder's
ladder of frame rates and sizes under a low estimate (:mod:`.ladder`)."""
