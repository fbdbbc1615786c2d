"""One speaker's audio on its way to text: the resampler, the per-speaker VAD state, and the
utterances and lines that come out of it (see dvm.server.pipeline)."""

from __future__ import annotations

import collections
from dataclasses import dataclass, field

import numpy as np

from dvm.harness.audio import SAMPLE_RATE
from dvm.server.vad import StreamingVad

__all__ = ["SAMPLE_RATE", "Interim", "InterimRequest", "Line", "Resampler", "SpeakerState", "Speculation", "Utterance"]
PREROLL_WINDOWS = 6  # ~190 ms of audio kept before the VAD fires, so first syllables are not cut


@dataclass
class Line:
    session_id: str
    speaker_id: str
    speaker_name: str
    start: float
    end: float
    text: str
    engine: str
    latency_s: float
    status: str = "ok"


@dataclass
class Utterance:
    session_id: str
    speaker_id: str
    speaker_name: str
    seq: int
    start: float  # seconds since the session's first audio
    end: float
    end_wall: float  # monotonic time of the end of speech (latency reference)
    pcm: np.ndarray
    queued_at: float = 0.0


@dataclass
class Speculation:
    """One speculative decode of a speaker's utterance, from its first sample to ``voiced`` windows."""

    key: tuple[str, str]
    seq: int  # the utterance it belongs to
    voiced: int  # VAD windows of speech it covers (the utterance's audio up to the last voiced window)
    pcm: np.ndarray
    text: str | None = None
    done: bool = False
    stale: bool = False  # speech resumed (or the utterance was dropped): the result will not be used
    utterance: object | None = None  # set when the utterance ended before the decode finished
    queued_at: float = 0.0


@dataclass
class InterimRequest:
    key: tuple[str, str]
    seq: int
    pcm: np.ndarray
    speech_started_wall: float


@dataclass
class Interim:
    """The latest interim hypothesis of one speaker's utterance in progress."""

    session_id: str
    speaker_id: str
    speaker_name: str
    seq: int
    start: float
    text: str
    at: float
    interim: bool = field(default=True)

    def as_dict(self) -> dict:
        return {"session_id": self.session_id, "speaker_id": self.speaker_id, "speaker_name": self.speaker_name,
                "start": round(self.start, 3), "text": self.text, "interim": True}


class Resampler:
    """48 kHz stereo s16 -> 16 kHz mono float32, stateful across chunks (PyAV/FFmpeg's swresample)."""

    def __init__(self):
        import av  # noqa: PLC0415 - PyAV loads FFmpeg: only on first use

        self._av = av
        self._resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)

    def __call__(self, pcm: bytes) -> np.ndarray:
        samples = np.frombuffer(pcm, dtype="<i2")
        if samples.size < 2:
            return np.zeros(0, dtype=np.float32)
        samples = samples[: samples.size - samples.size % 2]
        frame = self._av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="stereo")
        frame.sample_rate = 48000
        out = [f.to_ndarray().reshape(-1) for f in self._resampler.resample(frame)]
        return np.concatenate(out).astype(np.float32, copy=False) if out else np.zeros(0, dtype=np.float32)


@dataclass
class SpeakerState:
    session_id: str
    speaker_id: str
    name: str
    resample: Resampler = field(default_factory=Resampler)
    vad: StreamingVad = field(default_factory=StreamingVad)
    position: int = 0  # 16 kHz samples through the VAD
    fed: int = 0  # 16 kHz samples received
    anchor: float = 0.0  # session time of sample 0, moved forward across gaps in delivery
    in_speech: bool = False
    speech: list = field(default_factory=list)
    speech_windows: int = 0
    silence_windows: int = 0
    start: float = 0.0
    last_speech_time: float = 0.0
    last_speech_wall: float = 0.0
    last_audio_wall: float = 0.0
    preroll: collections.deque = field(default_factory=lambda: collections.deque(maxlen=PREROLL_WINDOWS))
    vad_buffer: list = field(default_factory=list)
    seq: int = 0
    voiced: int = 0  # len(speech) at the last voiced window
    spec: Speculation | None = None
    speech_started_wall: float = 0.0
    last_interim_wall: float = 0.0
    first_interim_done: bool = False
