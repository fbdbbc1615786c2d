"""libopus through ctypes: the copy PyAV's wheel ships, else the system's, or ``DVM_LIBOPUS``.

Shared by the Discord receive path (``dvm.server.voice.opus``) and the clip generator
(``dvm.harness.degrade``), both of which need what PyAV's decoder cannot give: real packet-loss
concealment and in-band FEC. Needs nothing but pip (PyAV is a dependency of dvm).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import os
from pathlib import Path

SAMPLE_RATE = 48_000
CHANNELS = 2
MAX_FRAME_SAMPLES = 5760  # 120 ms at 48 kHz, the longest Opus packet


class OpusError(Exception):
    """A packet the decoder rejects."""


def _candidates() -> list[str]:
    found: list[str] = []
    if os.environ.get("DVM_LIBOPUS"):
        found.append(os.environ["DVM_LIBOPUS"])
    try:
        import av  # noqa: PLC0415 - PyAV loads FFmpeg: only on first use

        pkg = Path(av.__file__).resolve().parent
        for pattern in ("av.libs/libopus*", "av.libs/opus*.dll", "av.libs/libopus*.dll"):
            found += sorted(glob.glob(str(pkg.parent / pattern)))
        found += sorted(glob.glob(str(pkg / ".dylibs" / "libopus*")))
    except (ImportError, OSError):
        pass
    system = ctypes.util.find_library("opus")
    if system:
        found.append(system)
    return found


class LibOpus:
    """The few libopus calls we need, bound from one shared library file."""

    def __init__(self, path: str) -> None:
        lib = ctypes.CDLL(path)
        lib.opus_decoder_create.argtypes = [ctypes.c_int32, ctypes.c_int, ctypes.POINTER(ctypes.c_int)]
        lib.opus_decoder_create.restype = ctypes.c_void_p
        lib.opus_decoder_destroy.argtypes = [ctypes.c_void_p]
        lib.opus_decoder_destroy.restype = None
        lib.opus_decode.argtypes = [
            ctypes.c_void_p,
            ctypes.c_char_p,
            ctypes.c_int32,
            ctypes.POINTER(ctypes.c_int16),
            ctypes.c_int,
            ctypes.c_int,
        ]
        lib.opus_decode.restype = ctypes.c_int
        lib.opus_packet_get_nb_samples.argtypes = [ctypes.c_char_p, ctypes.c_int32, ctypes.c_int32]
        lib.opus_packet_get_nb_samples.restype = ctypes.c_int
        lib.opus_strerror.argtypes = [ctypes.c_int]
        lib.opus_strerror.restype = ctypes.c_char_p
        lib.opus_get_version_string.argtypes = []
        lib.opus_get_version_string.restype = ctypes.c_char_p
        self.lib = lib
        self.path = path
        self.version = lib.opus_get_version_string().decode()


_LIB: LibOpus | None = None
_LIB_TRIED = False


def load() -> LibOpus | None:
    """The first libopus that loads (cached for the process), or None."""
    global _LIB, _LIB_TRIED
    if not _LIB_TRIED:
        _LIB_TRIED = True
        for path in _candidates():
            try:
                _LIB = LibOpus(path)
                break
            except (OSError, AttributeError):
                continue
    return _LIB


class Decoder:
    """One libopus decoder state: 48 kHz stereo s16le out."""

    def __init__(self, lib: LibOpus) -> None:
        self._lib = lib.lib
        err = ctypes.c_int(0)
        self._state = self._lib.opus_decoder_create(SAMPLE_RATE, CHANNELS, ctypes.byref(err))
        if err.value != 0 or not self._state:
            raise OpusError(f"opus_decoder_create: {self._lib.opus_strerror(err.value).decode()}")
        self._pcm = (ctypes.c_int16 * (MAX_FRAME_SAMPLES * CHANNELS))()

    def _run(self, data: bytes | None, samples: int, fec: int) -> bytes:
        n = self._lib.opus_decode(self._state, data, len(data) if data else 0, self._pcm, samples, fec)
        if n < 0:
            raise OpusError(self._lib.opus_strerror(n).decode())
        return ctypes.string_at(self._pcm, n * CHANNELS * 2)

    def samples(self, packet: bytes) -> int:
        n = self._lib.opus_packet_get_nb_samples(packet, len(packet), SAMPLE_RATE)
        if n <= 0 or n > MAX_FRAME_SAMPLES:
            raise OpusError(self._lib.opus_strerror(n).decode() if n < 0 else f"bad frame length {n}")
        return n

    def decode(self, packet: bytes) -> bytes:
        if not packet:
            raise OpusError("empty packet")
        return self._run(packet, MAX_FRAME_SAMPLES, 0)

    def conceal(self, samples: int, fec_packet: bytes | None) -> bytes:
        """PCM for one lost frame: from the next packet's in-band FEC when given, else PLC."""
        if fec_packet:
            try:
                return self._run(fec_packet, samples, 1)
            except OpusError:
                pass
        return self._run(None, samples, 0)

    def __del__(self) -> None:
        state, self._state = getattr(self, "_state", None), None
        if state:
            self._lib.opus_decoder_destroy(state)
