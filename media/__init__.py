"""Shared media code: exact audio conversion, rings on a sample timeline, streaming
resampling and pacing. Used by both sides; no WebRTC, no torch."""

from .audio import array_to_frame, as_channels_first, float_to_s16, frame_to_array, s16_frame
from .pacing import sleep_until
from .resample import AudioFramer, StreamResampler, TimedResampler
from .ring import AudioRing, IndexedAudioRing, Placement

__all__ = ["AudioFramer", "AudioRing", "IndexedAudioRing", "Placement", "StreamResampler",
           "TimedResampler", "array_to_frame", "as_channels_first", "float_to_s16",
           "frame_to_array", "s16_frame", "sleep_until"]
