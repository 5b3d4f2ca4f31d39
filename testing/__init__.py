"""Test a pipeline the way a user meets it: streamed through the real cloud app and the
real relay on 127.0.0.1 to a receiver that offers like the browser page.

    from scope_relay.testing import stream_pipeline, dominant_frequency

    async with stream_pipeline("my-tone", pipelines=[MyTone], parameters={"frequency": 440}) as s:
        audio = await s.wait_audio(1.0)          # int16 (2, 48000), 48 kHz stereo
        assert abs(dominant_frequency(audio[0]) - 440) < 5

Part of the installed package so plugin authors can use it in their own tests (it needs
the ``cloud`` extra: torch). ``__all__`` is exactly the table in docs/pipelines.md
(``tests/unit/test_exported_members.py``).
"""

from scope_relay.protocol.errors import PipelineFailed

from .analysis import dominant_frequency, mean_colour, rms
from .camera import NumberedCamera, SyntheticCamera, colour_bars, frame_number
from .receiver import Receiver
from .session import StreamSession, stream_pipeline

__all__ = ["NumberedCamera", "PipelineFailed", "Receiver", "StreamSession", "SyntheticCamera",
           "colour_bars", "dominant_frequency", "frame_number", "mean_colour", "rms",
           "stream_pipeline"]
