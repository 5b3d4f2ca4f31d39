"""What the cloud app and the local relay must agree on, and nothing else.

Control-channel messages, capability flags, audio constants and frame conversion,
the media-clock conventions. No torch, no aiohttp servers, no WebRTC sessions here.
"""
