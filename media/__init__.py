"""Shared media code: exact audio conversion, rings on a sample timeline, streaming
resampling and pacing. Used by both sides; no WebRTC, no torch."""
