"""Shared WebRTC code: ICE, Opus, SDP checks, sender-report timing, the peer skeleton,
and the one module that reaches into aiortc internals."""
