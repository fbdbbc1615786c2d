"""Degraded copies of clean speech: pink noise at a signal-to-noise ratio, and Discord's audio path
(48 kHz stereo Opus in 20 ms frames, with packets lost and concealed by libopus).

Every random thing takes a seed, so a rebuild gives the same audio for the same libopus.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np

from dvm import libopus
from dvm.errors import DvmError
from dvm.harness.audio import SAMPLE_RATE

PEAK = 10 ** (-3 / 20)  # speech is normalised to a -3 dBFS peak
OPUS_RATE = 48_000
OPUS_FRAME = 960  # 20 ms at 48 kHz, what Discord sends


def pink_noise(samples: int, seed: int) -> np.ndarray:
    """Unit-RMS pink (1/f power) noise from a fixed seed."""
    rng = np.random.default_rng(seed)
    spectrum = np.fft.rfft(rng.standard_normal(samples))
    freqs = np.fft.rfftfreq(samples, 1 / SAMPLE_RATE)
    spectrum[1:] /= np.sqrt(freqs[1:] / freqs[1])
    spectrum[0] = 0
    noise = np.fft.irfft(spectrum, n=samples)
    return (noise / np.sqrt(np.mean(noise**2))).astype(np.float32)


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def add_noise(x: np.ndarray, snr_db: float, seed: int) -> np.ndarray:
    """Add pink noise at ``snr_db`` below the speech RMS (measured over 10 ms frames within 30 dB of the loudest)."""
    frames = x[: len(x) // 160 * 160].reshape(-1, 160)
    rms = np.sqrt(np.mean(frames.astype(np.float64) ** 2, axis=1))
    speech = frames[rms > rms.max() * 10 ** (-30 / 20)]
    noise = pink_noise(len(x), seed) * _rms(speech) * 10 ** (-snr_db / 20)
    mixed = x + noise
    top = float(np.max(np.abs(mixed)))
    return (mixed * (PEAK / top) if top > PEAK else mixed).astype(np.float32)


def _resample(samples: np.ndarray, layout_in: str, rate_in: int, layout_out: str, rate_out: int) -> np.ndarray:
    import av  # noqa: PLC0415 - PyAV loads FFmpeg: only on first use

    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples, dtype=np.float32), format="flt", layout=layout_in)
    frame.sample_rate = rate_in
    resampler = av.AudioResampler(format="flt", layout=layout_out, rate=rate_out)
    out = [f.to_ndarray() for f in resampler.resample(frame)] + [f.to_ndarray() for f in resampler.resample(None)]
    return np.concatenate(out, axis=1)  # packed: shape (1, samples * channels)


def opus_packets(x: np.ndarray, bitrate: int, fec: bool) -> tuple[list[bytes], int, int]:
    """16 kHz mono -> 48 kHz stereo -> libopus (VOIP, VBR, 20 ms frames): (packets, pre-skip, 48 kHz length)."""
    import av  # noqa: PLC0415 - PyAV loads FFmpeg: only on first use

    stereo48 = _resample(x.reshape(1, -1), "mono", SAMPLE_RATE, "stereo", OPUS_RATE).reshape(-1, 2)
    total = len(stereo48)
    padded = np.zeros((-(-(total + OPUS_FRAME) // OPUS_FRAME) * OPUS_FRAME, 2), dtype=np.float32)
    padded[:total] = stereo48
    encoder = av.CodecContext.create("libopus", "w")
    encoder.sample_rate, encoder.layout, encoder.format = OPUS_RATE, "stereo", "flt"
    encoder.bit_rate = bitrate
    encoder.time_base = Fraction(1, OPUS_RATE)
    options = {"application": "voip", "frame_duration": "20", "vbr": "on"}
    if fec:  # what a Discord client does on a lossy link: in-band FEC, tuned for the expected loss
        options.update({"fec": "1", "packet_loss": "5"})
    encoder.options = options
    packets: list[bytes] = []
    pre_skip = None
    for i in range(0, len(padded) + OPUS_FRAME, OPUS_FRAME):
        frame = None
        if i < len(padded):
            frame = av.AudioFrame.from_ndarray(padded[i : i + OPUS_FRAME].reshape(1, -1), format="flt", layout="stereo")
            frame.sample_rate, frame.pts, frame.time_base = OPUS_RATE, i, Fraction(1, OPUS_RATE)
        for packet in encoder.encode(frame):
            if pre_skip is None:  # the encoder's look-ahead shows as a negative first timestamp
                pre_skip = -packet.pts if packet.pts is not None and packet.pts < 0 else 312
            packets.append(bytes(packet))
        if frame is None:
            break
    return packets, pre_skip or 312, total


def lost_packets(count: int, loss: float, seed: int) -> set[int]:
    """Which packets a link with ``loss`` (0-1) random loss drops; never the first (the decoder needs a start)."""
    if loss <= 0:
        return set()
    rng = np.random.default_rng(seed)
    return {i for i in np.flatnonzero(rng.random(count) < loss).tolist() if i > 0}


def opus_round_trip(x: np.ndarray, bitrate: int = 32_000, loss: float = 0.0, seed: int = 0) -> np.ndarray:
    """Discord's path and back to 16 kHz mono, with ``loss`` of the 20 ms packets dropped.

    The receiver side is what dvm's Discord receiver does: libopus decodes each packet; a lost
    packet is rebuilt from the next packet's in-band FEC when that one arrived, else by libopus'
    packet-loss concealment. Needs libopus through ctypes when ``loss`` > 0 (PyAV's copy serves).
    """
    packets, pre_skip, total = opus_packets(x, bitrate, fec=loss > 0)
    lost = lost_packets(len(packets), loss, seed)
    pcm = _decode(packets, lost)
    stereo = np.frombuffer(pcm, dtype="<i2").astype(np.float32).reshape(-1, 2) / 32768.0
    out = stereo[pre_skip : pre_skip + total]
    mono16 = _resample(np.ascontiguousarray(out).reshape(1, -1), "stereo", OPUS_RATE, "mono", SAMPLE_RATE).reshape(-1)
    return mono16[: len(x)] if len(mono16) >= len(x) else np.pad(mono16, (0, len(x) - len(mono16)))


def _decode(packets: list[bytes], lost: set[int]) -> bytes:
    lib = libopus.load()
    if lib is None:
        if lost:
            raise DvmError("packet-loss concealment needs libopus (PyAV's copy, the system's libopus0, or DVM_LIBOPUS)")
        return _decode_pyav(packets)
    decoder = libopus.Decoder(lib)
    out = []
    for i, packet in enumerate(packets):
        if i in lost:
            following = packets[i + 1] if i + 1 < len(packets) and i + 1 not in lost else None
            out.append(decoder.conceal(decoder.samples(packet), following))
        else:
            out.append(decoder.decode(packet))
    return b"".join(out)


def _decode_pyav(packets: list[bytes]) -> bytes:
    import av  # noqa: PLC0415 - PyAV loads FFmpeg: only on first use

    decoder = av.CodecContext.create("libopus", "r")
    decoder.sample_rate, decoder.layout = OPUS_RATE, "stereo"
    to_s16 = av.AudioResampler(format="s16", layout="stereo", rate=OPUS_RATE)
    out = []
    for packet in packets:
        for frame in decoder.decode(av.Packet(packet)):
            out.extend(f.to_ndarray().tobytes() for f in to_s16.resample(frame))
    out.extend(f.to_ndarray().tobytes() for f in to_s16.resample(None))
    return b"".join(out)
