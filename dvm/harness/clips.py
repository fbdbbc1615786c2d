"""Reference clips: a directory of 16 kHz mono 16-bit WAVs described by one ``manifest.json``.

The manifest is a JSON list; each entry names a clip::

    {"id": "en-jfk", "file": "en-jfk.wav", "seconds": 11.0, "language": "en",
     "voice": "John F. Kennedy", "kind": "human", "text": "And so my fellow ...",
     "source": "how it was made"}

``id``, ``file``, ``language`` and ``kind`` are required. ``text`` is the reference
transcript: a missing or null ``text`` means "timed but not scored", an empty string means
"expected silence" (the clip measures hallucination). ``seconds``, when given, must match the
WAV. Dialogue clips carry ``turns``: ``[{"speaker", "start", "end", "text"}, ...]`` in seconds.
``speaker`` is accepted for ``voice``.
"""

from __future__ import annotations

import json
import os
import math
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dvm.harness.errors import DvmError

__all__ = ["Clip", "SAMPLE_RATE", "DEFAULT_CLIPS_DIR", "MANIFEST", "load_clips", "read_audio", "write_wav"]

SAMPLE_RATE = 16_000
MANIFEST = "manifest.json"
# The committed reference clips (present in a source checkout).
DEFAULT_CLIPS_DIR = Path(__file__).resolve().parents[2] / "fixtures" / "audio"


def default_clips_dir() -> Path:
    """``DVM_CLIPS_DIR`` if set, else the repository's fixtures/audio."""
    env = os.environ.get("DVM_CLIPS_DIR")
    return Path(env) if env else DEFAULT_CLIPS_DIR
_SECONDS_TOLERANCE = 0.05
_CONVERT_HINT = "convert with: ffmpeg -i IN -ar 16000 -ac 1 -c:a pcm_s16le OUT.wav"


@dataclass
class Clip:
    id: str
    path: Path
    seconds: float
    language: str
    voice: str
    kind: str
    text: str | None
    source: str
    turns: list[dict] | None = None

    @property
    def scored(self) -> bool:
        """True when the clip has a reference transcript (silence counts: its reference is "")."""
        return self.text is not None

    @property
    def expects_silence(self) -> bool:
        return self.text == ""


def load_clips(directory: str | Path | None = None) -> list[Clip]:
    """Read and check ``directory/manifest.json`` and every WAV it names.

    Raises :class:`DvmError` with a one-line message naming the manifest entry at fault.
    """
    directory = Path(directory) if directory is not None else default_clips_dir()
    manifest = directory / MANIFEST
    if not directory.is_dir():
        raise DvmError(f"clips directory not found: {directory}")
    if not manifest.is_file():
        raise DvmError(f"no {MANIFEST} in clips directory {directory}")
    try:
        entries = json.loads(manifest.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DvmError(f"{manifest}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DvmError(f"{manifest}: cannot read ({exc})") from None
    if isinstance(entries, dict) and isinstance(entries.get("clips"), list):
        entries = entries["clips"]
    if not isinstance(entries, list):
        raise DvmError(f"{manifest}: expected a JSON list of clip entries, got {type(entries).__name__}")
    if not entries:
        raise DvmError(f"{manifest}: no clips listed")

    clips: list[Clip] = []
    seen: set[str] = set()
    for index, entry in enumerate(entries):
        clip = _parse_entry(manifest, index, entry)
        if clip.id in seen:
            raise DvmError(f"{manifest}: entry {index} ('{clip.id}'): duplicate id")
        seen.add(clip.id)
        clips.append(clip)
    return clips


def _parse_entry(manifest: Path, index: int, entry: object) -> Clip:
    name = f"entry {index}"
    if isinstance(entry, dict) and isinstance(entry.get("id"), str) and entry["id"].strip():
        name = f"entry {index} ('{entry['id']}')"

    def fail(problem: str) -> DvmError:
        return DvmError(f"{manifest}: {name}: {problem}")

    if not isinstance(entry, dict):
        raise fail(f"expected an object, got {type(entry).__name__}")
    for key in ("id", "file", "language", "kind"):
        value = entry.get(key)
        if not isinstance(value, str) or not value.strip():
            raise fail(f"'{key}' is missing or not a non-empty string")
    text = entry.get("text")
    if text is not None and not isinstance(text, str):
        raise fail(f"'text' must be a string or null, got {type(text).__name__}")
    voice = entry.get("voice", entry.get("speaker", ""))
    source = entry.get("source", "")
    for key, value in (("voice", voice), ("source", source)):
        if not isinstance(value, str):
            raise fail(f"'{key}' must be a string, got {type(value).__name__}")

    path = manifest.parent / entry["file"]
    if not path.is_file():
        raise fail(f"audio file not found: {path}")
    seconds = _wav_seconds(path, fail)
    declared = entry.get("seconds")
    if declared is not None:
        if isinstance(declared, bool) or not isinstance(declared, (int, float)) or not math.isfinite(declared):
            raise fail(f"'seconds' must be a number, got {declared!r}")
        if abs(declared - seconds) > _SECONDS_TOLERANCE:
            raise fail(f"'seconds' is {declared} but {path.name} lasts {seconds:.3f} s")
    turns = _parse_turns(entry.get("turns"), seconds, fail)
    return Clip(
        id=entry["id"],
        path=path,
        seconds=seconds,
        language=entry["language"],
        voice=voice,
        kind=entry["kind"],
        text=text,
        source=source,
        turns=turns,
    )


def _wav_seconds(path: Path, fail) -> float:
    try:
        with wave.open(str(path), "rb") as wav:
            rate, channels, width, frames = wav.getframerate(), wav.getnchannels(), wav.getsampwidth(), wav.getnframes()
    except (wave.Error, EOFError, OSError) as exc:
        raise fail(f"{path.name} is not a readable PCM WAV file ({exc})") from None
    if (rate, channels, width) != (SAMPLE_RATE, 1, 2):
        raise fail(f"{path.name} is {rate} Hz, {channels} channel(s), {8 * width}-bit; need 16000 Hz mono 16-bit ({_CONVERT_HINT})")
    if frames == 0:
        raise fail(f"{path.name} holds no audio")
    expected_bytes = frames * channels * width
    data_size = path.stat().st_size - 44  # canonical header; a shorter file is truncated
    if data_size < expected_bytes - 64:
        raise fail(f"{path.name} is truncated ({data_size} of {expected_bytes} audio bytes)")
    return frames / rate


def _parse_turns(turns: object, seconds: float, fail) -> list[dict] | None:
    if turns is None:
        return None
    if not isinstance(turns, list) or not turns:
        raise fail("'turns' must be a non-empty list")
    previous_end = 0.0
    for number, turn in enumerate(turns):
        if not isinstance(turn, dict):
            raise fail(f"turn {number} must be an object")
        start, end = turn.get("start"), turn.get("end")
        if not isinstance(turn.get("speaker"), str) or not isinstance(turn.get("text"), str):
            raise fail(f"turn {number} needs a 'speaker' and a 'text' string")
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (start, end)):
            raise fail(f"turn {number} needs numeric 'start' and 'end'")
        if not (previous_end - 1e-6 <= start < end <= seconds + _SECONDS_TOLERANCE):
            raise fail(f"turn {number} [{start}, {end}] overlaps the previous turn or lies outside the clip")
        previous_end = end
    return turns


def read_audio(clip_or_path: Clip | str | Path) -> np.ndarray:
    """Samples as float32 in [-1, 1), 16 kHz mono (see dvm.harness.audio.load_audio)."""
    from dvm.harness.audio import load_audio

    return load_audio(clip_or_path.path if isinstance(clip_or_path, Clip) else clip_or_path)


def write_wav(path: str | Path, samples: np.ndarray, rate: int = SAMPLE_RATE) -> None:
    """Write float samples in [-1, 1] (mono) as a 16-bit PCM WAV, clipping what lies outside."""
    pcm = np.clip(np.round(np.asarray(samples, dtype=np.float64) * 32767.0), -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(pcm.tobytes())
