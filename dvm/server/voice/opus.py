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

from dataclasses import dataclass

import numpy as np

from dvm import libopus
from dvm.libopus import CHANNELS, MAX_FRAME_SAMPLES, SAMPLE_RATE, OpusError  # noqa: F401 - part of this module's API

DEFAULT_FRAME_SAMPLES = 960  # 20 ms, what Discord sends
MAX_CONCEAL = 5  # at most 100 ms of concealment per gap
LATE_WINDOW = 64  # a packet this far behind is late (dropped); further behind, a new stream

LibOpusDecoder = libopus.Decoder


def backend() -> dict:
    """Which decoder this process uses: {"backend": "libopus"|"pyav", "library", "version"}."""
    lib = libopus.load()
    if lib is not None:
        return {"backend": "libopus", "library": lib.path, "version": lib.version}
    import av  # noqa: PLC0415 - PyAV loads FFmpeg: only on first use

    return {"backend": "pyav", "library": "libavcodec libopus", "version": av.__version__}


class PyAvDecoder:
    def __init__(self) -> None:
        import av  # noqa: PLC0415 - PyAV loads FFmpeg: only on first use

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
        lib = libopus.load()
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
        except Exception as e:  # noqa: BLE001 - never let one bad packet stop the stream
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
