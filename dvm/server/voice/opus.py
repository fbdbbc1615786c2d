"""Per-SSRC Opus decoding to 48 kHz stereo s16le PCM, with loss concealment on sequence gaps.

Backends, best first:

    libopus   libopus through ctypes: the copy PyAV's wheel ships (`av.libs/libopus-*.so`,
              `av/.dylibs/libopus*.dylib`), else the system's (`libopus0`), or `DVM_LIBOPUS`
              naming a file. Real packet-loss concealment and in-band FEC.
    pyav      PyAV's libopus decoder (`av.CodecContext.create("libopus", "r")`) when no libopus
              can be loaded directly; concealment is silence of the lost frames' length.

Both need nothing but pip (PyAV is a dependency of dvm). `OpusStream.feed` never raises.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import os
from dataclasses import dataclass
from pathlib import Path

SAMPLE_RATE = 48_000
CHANNELS = 2
MAX_FRAME_SAMPLES = 5760  # 120 ms at 48 kHz, the longest Opus packet
DEFAULT_FRAME_SAMPLES = 960  # 20 ms, what Discord sends
MAX_CONCEAL = 5  # at most 100 ms of concealment per gap
LATE_WINDOW = 64  # a packet this far behind is late (dropped); further behind, a new stream


class OpusError(Exception):
    """A packet the decoder rejects."""


def _libopus_candidates() -> list[str]:
    found: list[str] = []
    if os.environ.get("DVM_LIBOPUS"):
        found.append(os.environ["DVM_LIBOPUS"])
    try:
        import av

        pkg = Path(av.__file__).resolve().parent
        for pattern in ("av.libs/libopus*", "av.libs/opus*.dll", "av.libs/libopus*.dll"):
            found += sorted(glob.glob(str(pkg.parent / pattern)))
        found += sorted(glob.glob(str(pkg / ".dylibs" / "libopus*")))
    except Exception:
        pass
    system = ctypes.util.find_library("opus")
    if system:
        found.append(system)
    return found


class _LibOpus:
    """The few libopus calls we need."""

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


_LIB: _LibOpus | None = None
_LIB_TRIED = False


def _libopus() -> _LibOpus | None:
    global _LIB, _LIB_TRIED
    if not _LIB_TRIED:
        _LIB_TRIED = True
        for path in _libopus_candidates():
            try:
                _LIB = _LibOpus(path)
                break
            except (OSError, AttributeError):
                continue
    return _LIB


def backend() -> dict:
    """Which decoder this process uses: {"backend": "libopus"|"pyav", "library", "version"}."""
    lib = _libopus()
    if lib is not None:
        return {"backend": "libopus", "library": lib.path, "version": lib.version}
    import av

    return {"backend": "pyav", "library": "libavcodec libopus", "version": av.__version__}


class LibOpusDecoder:
    def __init__(self, lib: _LibOpus) -> None:
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


class PyAvDecoder:
    def __init__(self) -> None:
        import av

        self._av = av
        self._ctx = av.CodecContext.create("libopus", "r")
        self._ctx.sample_rate = SAMPLE_RATE
        self._ctx.layout = "stereo"

    def samples(self, packet: bytes) -> int:
        return DEFAULT_FRAME_SAMPLES

    def decode(self, packet: bytes) -> bytes:
        if not packet:
            raise OpusError("empty packet")
        try:
            frames = self._ctx.decode(self._av.Packet(packet))
        except (self._av.FFmpegError, ValueError) as e:
            raise OpusError(str(e)) from e
        out = []
        for frame in frames:
            pcm = frame.to_ndarray()
            if frame.format.name != "s16":  # planar or float: interleave and convert
                import numpy as np

                if pcm.dtype.kind == "f":
                    pcm = (np.clip(pcm, -1.0, 1.0) * 32767.0).astype(np.int16)
                if frame.format.is_planar:
                    pcm = pcm.T.reshape(-1)
            out.append(pcm.astype("<i2").tobytes())
        return b"".join(out)

    def conceal(self, samples: int, fec_packet: bytes | None) -> bytes:
        return bytes(samples * CHANNELS * 2)


def new_decoder(prefer: str | None = None) -> LibOpusDecoder | PyAvDecoder:
    """A decoder from the best backend (or the one named: "libopus", "pyav")."""
    if prefer != "pyav":
        lib = _libopus()
        if lib is not None:
            return LibOpusDecoder(lib)
        if prefer == "libopus":
            raise OpusError("libopus could not be loaded")
    return PyAvDecoder()


@dataclass(frozen=True, slots=True)
class Decoded:
    status: str  # decoded | failed | late
    pcm: bytes = b""  # concealment for the gap before this packet, then the packet's own PCM
    concealed: int = 0  # frames of concealment in pcm
    error: str = ""


class OpusStream:
    """One SSRC's decoder and sequence tracking (16-bit, wrapping)."""

    def __init__(self, prefer: str | None = None, max_conceal: int = MAX_CONCEAL) -> None:
        self._prefer = prefer
        self._decoder: LibOpusDecoder | PyAvDecoder | None = None
        self._max_conceal = max_conceal
        self._expected: int | None = None
        self._frame_samples = DEFAULT_FRAME_SAMPLES

    def reset(self) -> None:
        self._decoder = None
        self._expected = None

    def feed(self, sequence: int, packet: bytes) -> Decoded:
        """Decode the packet with sequence number `sequence`; conceal what was lost before it.

        A packet that fails to decode leaves its slot open, so it is concealed when the next
        good packet comes (as are frames dropped before Opus, e.g. DAVE failures)."""
        try:
            return self._feed(sequence & 0xFFFF, packet)
        except Exception as e:  # never let one bad packet stop the stream
            return Decoded("failed", error=f"{type(e).__name__}: {e}")

    def _feed(self, sequence: int, packet: bytes) -> Decoded:
        if self._decoder is None:
            self._decoder = new_decoder(self._prefer)
        lost = 0
        if self._expected is not None:
            delta = (sequence - self._expected) & 0xFFFF
            if delta >= 0x8000:
                if 0x10000 - delta <= LATE_WINDOW:
                    return Decoded("late")
                self._expected = None  # far behind: the sender restarted its sequence
            else:
                lost = delta
        try:
            samples = self._decoder.samples(packet)  # a cheap check of the packet's framing
        except OpusError as e:
            return Decoded("failed", error=str(e))
        # Conceal the lost frames first (libopus extrapolates from the frames before the gap;
        # the last lost frame comes from this packet's in-band FEC when it has some).
        concealed: list[bytes] = []
        n = min(lost, self._max_conceal)
        for i in range(n):
            fec = packet if i == n - 1 and lost <= self._max_conceal else None
            try:
                concealed.append(self._decoder.conceal(self._frame_samples, fec))
            except OpusError:
                break
        self._expected = sequence  # the gap is filled; this packet's own slot is still open
        try:
            pcm = self._decoder.decode(packet)
        except OpusError as e:
            return Decoded("failed", b"".join(concealed), len(concealed), str(e))
        self._frame_samples = samples
        self._expected = (sequence + 1) & 0xFFFF
        return Decoded("decoded", b"".join(concealed) + pcm, len(concealed))
