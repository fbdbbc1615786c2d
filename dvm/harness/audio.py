"""Audio as dvm handles it: 16 kHz mono float32 PCM (:data:`SAMPLE_RATE`, the rate whisper works at).
Decoding any common audio file to it (PyAV: WAV, FLAC, MP3, OGG/Opus, M4A...) and writing it as a
16-bit PCM WAV (a file, or bytes for an upload)."""

from __future__ import annotations

import io
import wave
from pathlib import Path

import numpy as np

from dvm.errors import DvmError

SAMPLE_RATE = 16000  # the one sample rate of the harness (engines, clips, mel filters, degradations)


def load_audio(path: str | Path, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Return the first audio stream of ``path`` as mono float32 at ``sample_rate``.

    A 16-bit mono WAV already at the rate is read directly; everything else goes through FFmpeg.
    """
    path = Path(path)
    if not path.exists():
        raise DvmError(f"{path}: no such file")
    if path.is_dir():
        raise DvmError(f"{path}: is a directory, not an audio file")
    if path.stat().st_size == 0:
        raise DvmError(f"{path}: file is empty")
    try:
        with wave.open(str(path), "rb") as wav:
            if (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (sample_rate, 1, 2):
                data = wav.readframes(wav.getnframes())
                if len(data) == wav.getnframes() * 2 and data:
                    return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0
    except (wave.Error, EOFError):
        pass  # not a plain PCM WAV: FFmpeg decides
    return _decode(path, sample_rate)


def _decode(path: Path, sample_rate: int) -> np.ndarray:
    import av  # noqa: PLC0415 - imported here: PyAV is heavy and only needed for compressed or resampled input

    chunks: list[np.ndarray] = []
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise DvmError(f"{path}: has no audio stream")
            resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
            for frame in container.decode(audio=0):
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().reshape(-1))
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().reshape(-1))
    except DvmError:
        raise
    except (av.error.FFmpegError, ValueError, OSError) as exc:
        raise DvmError(f"{path}: cannot decode audio ({exc.__class__.__name__}: {exc})") from None
    if not chunks:
        raise DvmError(f"{path}: contains no audio samples")
    pcm = np.concatenate(chunks).astype(np.float32, copy=False)
    if pcm.size == 0:
        raise DvmError(f"{path}: contains no audio samples")
    return pcm


def pcm16(samples: np.ndarray) -> np.ndarray:
    """Float samples in [-1, 1] as little-endian 16-bit integers, clipping what lies outside."""
    return np.clip(np.round(np.asarray(samples, dtype=np.float64).reshape(-1) * 32767.0), -32768, 32767).astype("<i2")


def wav_bytes(samples: np.ndarray, rate: int = SAMPLE_RATE) -> bytes:
    """Float samples in [-1, 1] (mono) as the bytes of a 16-bit PCM WAV file."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(pcm16(samples).tobytes())
    return buffer.getvalue()


def write_wav(path: str | Path, samples: np.ndarray, rate: int = SAMPLE_RATE) -> None:
    """Write float samples in [-1, 1] (mono) as a 16-bit PCM WAV, clipping what lies outside."""
    Path(path).write_bytes(wav_bytes(samples, rate))
