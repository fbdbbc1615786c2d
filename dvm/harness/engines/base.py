"""The engine interface: load once, then transcribe 16 kHz mono float32 PCM many times."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field

import numpy as np

# whisper's encoder sees 1500 frames per 30 s window: 50 frames per second of audio.
FRAMES_PER_SECOND = 50
AUDIO_CTX_MARGIN = 128
MIN_FITTED_CTX = 512  # short utterances (a few seconds) repeat themselves below this


@dataclass
class EngineConfig:
    """One configuration of one engine: everything a matrix cell varies."""

    engine: str = "whispercpp"
    model: str = "tiny.en"
    quant: str = "f16"  # whispercpp: f16 | q8_0 ; faster-whisper: int8 | int8_float32 | float32 | float16 ...
    threads: int = 2
    beam_size: int = 1  # 1 = greedy
    audio_ctx: str = "full"  # "full" (30 s window) | "fit" (fitted to the clip) | an integer as text
    language: str = "en"
    temperature_fallback: bool = False
    device: str = "cpu"

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "EngineConfig":
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        if "threads" in known:
            known["threads"] = int(known["threads"])
        if "beam_size" in known:
            known["beam_size"] = int(known["beam_size"])
        if "audio_ctx" in known:
            known["audio_ctx"] = str(known["audio_ctx"])
        return cls(**known)


@dataclass
class Segment:
    start: float
    end: float
    text: str


@dataclass
class Transcript:
    text: str
    segments: list[Segment]
    seconds: float  # wall time of the transcribe call
    audio_seconds: float
    timings: dict[str, float] = field(default_factory=dict)  # encode_s, decode_s, ... where exposed
    language: str | None = None

    @property
    def rtf(self) -> float:
        return self.seconds / self.audio_seconds if self.audio_seconds else math.nan

    def as_dict(self) -> dict:
        data = asdict(self)
        data["rtf"] = self.rtf
        return data


def fitted_audio_ctx(audio_seconds: float, margin: int = AUDIO_CTX_MARGIN) -> int:
    """Encoder frames for a clip: 50 per second of audio plus a safety margin, at least
    MIN_FITTED_CTX and at most 1500 (the full 30 s window).

    A context much smaller than the audio makes the decoder repeat itself or run away. So does a
    very small context even when it covers the audio: a 2.6 s utterance at 258 frames came out as
    one phrase repeated ~30 times with tiny.en, while 512 frames gave the right text.
    """
    return min(1500, max(MIN_FITTED_CTX, math.ceil(audio_seconds * FRAMES_PER_SECOND) + margin))


def resolve_audio_ctx(policy: str, audio_seconds: float) -> int:
    """0 means whisper's full 30 s window."""
    if policy in ("full", "0", ""):
        return 0
    if policy == "fit":
        return fitted_audio_ctx(audio_seconds)
    try:
        value = int(policy)
    except ValueError:
        raise ValueError(f"audio_ctx must be 'full', 'fit' or an integer, not {policy!r}") from None
    return max(0, min(1500, value))


class Engine(ABC):
    """Load once (``load``), then call ``transcribe`` as often as needed."""

    name: str = ""

    def __init__(self, config: EngineConfig):
        self.config = config
        self.load_seconds: float | None = None

    @abstractmethod
    def load(self) -> float:
        """Load the model; return the seconds it took."""

    @abstractmethod
    def transcribe(self, pcm: np.ndarray) -> Transcript:
        """Transcribe 16 kHz mono float32 samples."""

    @abstractmethod
    def info(self) -> dict:
        """Engine version, build features, model file and its sha256, device."""

    def set_threads(self, threads: int) -> bool:
        """Use ``threads`` CPU threads from the next ``transcribe`` on; False when the engine fixes its
        thread count at load (then the serving pipeline does not lend it idle cores)."""
        return False

    def close(self) -> None:  # noqa: B027 - optional hook
        """Free native resources."""
