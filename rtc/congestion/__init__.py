"""Congestion control for the video we send: a bandwidth estimate (:mod:`.estimate`),
a pacer that spreads each frame's packets at a rate (:mod:`.pacer`) and the encoder's
ladder of frame rates and sizes under a low estimate (:mod:`.ladder`); on the receiving
side, the delay-based estimate sent back as REMB (:mod:`.delay_based`, built of
:mod:`.inter_arrival`, :mod:`.trendline` and :mod:`.aimd`)."""
