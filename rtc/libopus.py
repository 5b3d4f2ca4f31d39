"""libopus through ctypes: the few calls PyAV does not expose.

PyAV (FFmpeg) decodes a packet it is given; it cannot conceal a lost one or decode the
in-band FEC a later packet carries, and it fixes encoder options when the codec opens, so
the expected loss (which sizes FEC) cannot follow the network. libopus does all of that.

Which libopus: the one PyAV's wheel ships (the same library FFmpeg encodes Opus with in
this process; 1.6 with av 18), else the system's. The maintained binding, ``opuslib-next``,
only finds the system's: 1.3.1 on Debian 12, whose encoder measured 4 dB less tone purity
than PyAV's on this project's own test (tests/integration/test_scope_outputs.py), and which
lacks ``opus_packet_has_lbrr``. Hence this small binding, not that dependency.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import os
import platform
import sys
from typing import Any

#: opus_defines.h
APPLICATIONS = {"voip": 2048, "audio": 2049, "lowdelay": 2051}
_SET_BITRATE = 4002
_SET_VBR = 4006
_SET_COMPLEXITY = 4010
_SET_INBAND_FEC = 4012
_SET_PACKET_LOSS_PERC = 4014
_SET_VBR_CONSTRAINT = 4020
#: the largest packet libopus writes (RFC 6716: 1275 bytes per frame, up to 3 frames)
MAX_PACKET_BYTES = 4000


def _candidates() -> list[str]:
    found = []
    try:
        import av

        base = os.path.dirname(os.path.abspath(av.__file__))
        for pattern in ("../av.libs/libopus*.so*", ".dylibs/libopus*.dylib", "../av.libs/opus*.dll",
                        "../av.libs/libopus*.dll"):
            found += sorted(glob.glob(os.path.join(base, pattern)))
    except ImportError:  # pragma: no cover - av is a dependency
        pass
    system = ctypes.util.find_library("opus")
    if system:
        found.append(system)
    return found


def _load() -> tuple[Any, str]:
    errors = []
    for path in _candidates():
        try:
            lib = ctypes.CDLL(path)
            lib.opus_get_version_string.restype = ctypes.c_char_p
            lib.opus_encoder_create.restype = ctypes.c_void_p
            lib.opus_encoder_create.argtypes = [ctypes.c_int32, ctypes.c_int,
                                                ctypes.c_int, ctypes.POINTER(ctypes.c_int)]
            lib.opus_encode.restype = ctypes.c_int32
            lib.opus_encode.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int,
                                        ctypes.c_char_p, ctypes.c_int32]
            lib.opus_encoder_destroy.argtypes = [ctypes.c_void_p]
            lib.opus_decoder_create.restype = ctypes.c_void_p
            lib.opus_decoder_create.argtypes = [ctypes.c_int32, ctypes.c_int,
                                                ctypes.POINTER(ctypes.c_int)]
            lib.opus_decode.restype = ctypes.c_int
            lib.opus_decode.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int32,
                                        ctypes.c_char_p, ctypes.c_int, ctypes.c_int]
            lib.opus_decoder_destroy.argtypes = [ctypes.c_void_p]
            lib.opus_strerror.restype = ctypes.c_char_p
            return lib, path
        except (OSError, AttributeError) as exc:
            errors.append(f"{path}: {exc}")
    raise OSError("no usable libopus (" + ("; ".join(errors) or "none found") + ")")


try:
    _lib, LIBRARY_PATH = _load()
    UNAVAILABLE = ""
except OSError as exc:  # pragma: no cover - depends on the platform
    _lib, LIBRARY_PATH, UNAVAILABLE = None, "", str(exc)


def available() -> bool:
    return _lib is not None


def encoder_available() -> bool:
    """``opus_encoder_ctl`` is variadic, which ctypes cannot call correctly on Apple
    silicon: there the encoder stays PyAV's."""
    return _lib is not None and not (sys.platform == "darwin" and platform.machine() == "arm64")


def version() -> str:
    return _lib.opus_get_version_string().decode() if _lib is not None else ""


class OpusError(RuntimeError):
    pass


def _check(code: int, what: str) -> int:
    if code < 0:
        raise OpusError(f"{what}: {_lib.opus_strerror(code).decode()}")
    return code


def has_lbrr(packet: bytes) -> bool | None:
    """Whether a packet carries in-band FEC (None: this libopus cannot tell)."""
    check = getattr(_lib, "opus_packet_has_lbrr", None)
    if check is None or not packet:
        return None
    return bool(check(packet, len(packet)) > 0)


class Encoder:
    """An Opus encoder whose settings can change while it runs (s16 interleaved in)."""

    def __init__(self, sample_rate: int, channels: int, application: str):
        if _lib is None:
            raise OpusError(UNAVAILABLE)
        error = ctypes.c_int()
        self._state = _lib.opus_encoder_create(sample_rate, channels,
                                               APPLICATIONS[application], ctypes.byref(error))
        _check(error.value, "opus_encoder_create")
        self.channels = channels
        self._out = ctypes.create_string_buffer(MAX_PACKET_BYTES)

    def _ctl(self, request: int, value: int) -> None:
        _check(_lib.opus_encoder_ctl(ctypes.c_void_p(self._state), ctypes.c_int(request),
                                     ctypes.c_int32(value)), f"opus_encoder_ctl({request})")

    def configure(self, *, bitrate: int | None = None, complexity: int | None = None,
                  vbr: bool | None = None, vbr_constraint: bool | None = None,
                  inband_fec: bool | None = None,
                  packet_loss_percent: int | None = None) -> None:
        for request, value in ((_SET_BITRATE, bitrate), (_SET_COMPLEXITY, complexity),
                               (_SET_VBR, vbr), (_SET_VBR_CONSTRAINT, vbr_constraint),
                               (_SET_INBAND_FEC, inband_fec),
                               (_SET_PACKET_LOSS_PERC, packet_loss_percent)):
            if value is not None:
                self._ctl(request, int(value))

    def encode(self, pcm: bytes, frame_size: int) -> bytes:
        n = _check(_lib.opus_encode(self._state, pcm, frame_size, self._out, MAX_PACKET_BYTES),
                   "opus_encode")
        return self._out.raw[:n]

    def __del__(self) -> None:
        if getattr(self, "_state", None) and _lib is not None:
            _lib.opus_encoder_destroy(self._state)
            self._state = None


class Decoder:
    """An Opus decoder that conceals (``packet=None``) and decodes FEC (``fec=True``)."""

    def __init__(self, sample_rate: int, channels: int):
        if _lib is None:
            raise OpusError(UNAVAILABLE)
        error = ctypes.c_int()
        self._state = _lib.opus_decoder_create(sample_rate, channels, ctypes.byref(error))
        _check(error.value, "opus_decoder_create")
        self.channels = channels
        self._pcm = ctypes.create_string_buffer(5760 * channels * 2)  # 120 ms of s16

    def decode(self, packet: bytes | None, frame_size: int, *, fec: bool = False) -> bytes:
        """s16 interleaved; ``frame_size``: the most samples per channel wanted (for a
        lost packet or FEC, exactly the lost duration)."""
        n = _check(_lib.opus_decode(self._state, packet or None, len(packet or b""), self._pcm,
                                    frame_size, int(fec)), "opus_decode")
        return self._pcm.raw[:n * self.channels * 2]

    def __del__(self) -> None:
        if getattr(self, "_state", None) and _lib is not None:
            _lib.opus_decoder_destroy(self._state)
            self._state = None
