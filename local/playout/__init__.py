"""The relay's playout: the cloud's media retimed onto the relay's clock with one offset per
session, late frames judged, tracks released to the browser."""
