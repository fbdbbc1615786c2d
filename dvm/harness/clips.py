"""Reference clips: a directory of audio files described by one ``manifest.json``.

The manifest is a JSON list; each entry names a clip::

    {"id": "en-jfk", "file": "en-jfk.wav", "seconds": 11.0, "language": "en",
     "voice": "John F. Kennedy", "kind": "human", "tier": "real", "text": "And so my fellow ...",
     "source": "how it was made"}

Only ``id`` and ``file`` are required. ``text`` is the reference transcript: a missing or null
``text`` means "timed but not scored", an empty string means "expected silence" (the clip
measures hallucination). ``language`` defaults to ``en``, ``kind`` to ``speech``, ``tier`` to
one derived from the kind (see ``TIER_OF_KIND``), ``timed`` to true (false: scored from one
pass, left out of the RTF figures); ``seconds``, when given, must match the audio. Dialogue
clips carry ``turns``: ``[{"speaker", "start", "end", "text"}, ...]`` in seconds.
``speaker`` is accepted for ``voice``. Files may be any audio PyAV reads (WAV, FLAC, MP3,
Opus...), at any rate and channel count; they are decoded to 16 kHz mono when used.

A directory without a manifest works too: every ``NAME.wav`` (or .flac, .mp3, ...) with a
``NAME.txt`` beside it is a clip whose reference is that text (an audio file without one is
timed, not scored). Sub-directories that hold a ``manifest.json`` of their own (a *tier*, such
as ``fixtures/audio/real``) are read after the top level, their files relative to themselves.
"""

from __future__ import annotations

import json
import math
import os
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dvm.errors import DvmError
from dvm.harness.audio import SAMPLE_RATE, pcm16, write_wav

__all__ = ["Clip", "SAMPLE_RATE", "DEFAULT_CLIPS_DIR", "MANIFEST", "TIER_OF_KIND", "REAL_TIERS", "load_clips", "read_audio",
           "write_wav", "write_audio"]

MANIFEST = "manifest.json"
# The committed reference clips (present in a source checkout).
DEFAULT_CLIPS_DIR = Path(__file__).resolve().parents[2] / "fixtures" / "audio"


def default_clips_dir() -> Path:
    """``DVM_CLIPS_DIR`` if set, else the repository's fixtures/audio."""
    env = os.environ.get("DVM_CLIPS_DIR")
    return Path(env) if env else DEFAULT_CLIPS_DIR
_SECONDS_TOLERANCE = 0.05
AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".aac", ".webm", ".mka")
# The tier a clip reports its WER under when its entry names none.
TIER_OF_KIND = {"clean": "tts", "tts": "tts", "human": "real", "real": "real", "noisy": "noisy", "codec": "real-opus",
                "quiet": "quiet", "silence": "silence", "noise": "silence", "dialogue": "dialogue", "long": "long"}
# Real people speaking, in the order tables show them; the chosen configuration is decided on these.
REAL_TIERS = ("real", "real-opus", "noisy", "long")
TIER_ORDER = ("tts", *REAL_TIERS, "quiet", "dialogue", "speech")


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
    tier: str = ""
    timed: bool = True

    def __post_init__(self):
        if not self.tier:
            self.tier = TIER_OF_KIND.get(self.kind, self.kind)

    @property
    def scored(self) -> bool:
        """True when the clip has a reference transcript (silence counts: its reference is "")."""
        return self.text is not None

    @property
    def expects_silence(self) -> bool:
        return self.text == ""


def load_clips(directory: str | Path | None = None) -> list[Clip]:
    """Read and check ``directory``'s clips: its ``manifest.json`` (or its NAME.wav + NAME.txt
    pairs when it has none), then the manifests of its tier sub-directories.

    Raises :class:`DvmError` with a one-line message naming the manifest entry at fault.
    """
    directory = Path(directory) if directory is not None else default_clips_dir()
    if not directory.is_dir():
        raise DvmError(f"clips directory not found: {directory}")
    manifest = directory / MANIFEST
    tiers = sorted(p.parent for p in directory.glob(f"*/{MANIFEST}"))
    if manifest.is_file():
        clips = _read_manifest(manifest)
    elif tiers:
        clips = []
    else:
        clips = _sidecar_clips(directory)
    for tier_dir in tiers:
        clips += _read_manifest(tier_dir / MANIFEST)
    seen: set[str] = set()
    for clip in clips:
        if clip.id in seen:
            raise DvmError(f"{directory}: clip id '{clip.id}' appears twice")
        seen.add(clip.id)
    return clips


def _read_manifest(manifest: Path) -> list[Clip]:
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


def _sidecar_clips(directory: Path) -> list[Clip]:
    """NAME.wav (or another audio suffix) + NAME.txt pairs; the text file holds the reference."""
    audio = sorted(p for p in directory.iterdir() if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
    if not audio:
        raise DvmError(f"no {MANIFEST} and no audio files in clips directory {directory}")
    clips = []
    for path in audio:
        def fail(problem: str, path=path) -> DvmError:
            return DvmError(f"{directory}: {path.name}: {problem}")

        text_file = path.with_suffix(".txt")
        text = None
        if text_file.is_file():
            try:
                text = " ".join(text_file.read_text(encoding="utf-8").split())
            except (OSError, UnicodeDecodeError) as exc:
                raise fail(f"cannot read {text_file.name} ({exc})") from None
        clips.append(Clip(id=path.stem, path=path, seconds=_audio_seconds(path, fail), language="en", voice="",
                          kind="speech", text=text, source=f"{path.name} + {text_file.name}" if text is not None else path.name))
    return clips


def _parse_entry(manifest: Path, index: int, entry: object) -> Clip:
    name = f"entry {index}"
    if isinstance(entry, dict) and isinstance(entry.get("id"), str) and entry["id"].strip():
        name = f"entry {index} ('{entry['id']}')"

    def fail(problem: str) -> DvmError:
        return DvmError(f"{manifest}: {name}: {problem}")

    if not isinstance(entry, dict):
        raise fail(f"expected an object, got {type(entry).__name__}")
    for key in ("id", "file"):
        value = entry.get(key)
        if not isinstance(value, str) or not value.strip():
            raise fail(f"'{key}' is missing or not a non-empty string")
    text = entry.get("text")
    if text is not None and not isinstance(text, str):
        raise fail(f"'text' must be a string or null, got {type(text).__name__}")
    fields = {"language": entry.get("language", "en"), "kind": entry.get("kind", "speech"), "tier": entry.get("tier", ""),
              "voice": entry.get("voice", entry.get("speaker", "")), "source": entry.get("source", "")}
    for key, value in fields.items():
        if not isinstance(value, str):
            raise fail(f"'{key}' must be a string, got {type(value).__name__}")
    for key in ("language", "kind"):
        if not fields[key].strip():
            raise fail(f"'{key}' must not be empty")
    timed = entry.get("timed", True)
    if not isinstance(timed, bool):
        raise fail(f"'timed' must be true or false, got {timed!r}")

    path = manifest.parent / entry["file"]
    if not path.is_file():
        raise fail(f"audio file not found: {path}")
    seconds = _audio_seconds(path, fail)
    declared = entry.get("seconds")
    if declared is not None:
        if isinstance(declared, bool) or not isinstance(declared, (int, float)) or not math.isfinite(declared):
            raise fail(f"'seconds' must be a number, got {declared!r}")
        if abs(declared - seconds) > _SECONDS_TOLERANCE:
            raise fail(f"'seconds' is {declared} but {path.name} lasts {seconds:.3f} s")
    turns = _parse_turns(entry.get("turns"), seconds, fail)
    return Clip(id=entry["id"], path=path, seconds=seconds, text=text, turns=turns, timed=timed, **fields)


def _audio_seconds(path: Path, fail) -> float:
    """The clip's length: from the header of a PCM WAV (checked for truncation), else from decoding it."""
    try:
        with wave.open(str(path), "rb") as wav:
            rate, channels, width, frames = wav.getframerate(), wav.getnchannels(), wav.getsampwidth(), wav.getnframes()
    except (wave.Error, EOFError, OSError):
        return _decoded_seconds(path, fail)
    if frames == 0:
        raise fail(f"{path.name} holds no audio")
    expected_bytes = frames * channels * width
    data_size = path.stat().st_size - 44  # canonical header; a shorter file is truncated
    if data_size < expected_bytes - 64:
        raise fail(f"{path.name} is truncated ({data_size} of {expected_bytes} audio bytes)")
    return frames / rate


def _decoded_seconds(path: Path, fail) -> float:
    """FLAC states its exact length in its header (STREAMINFO); anything else is decoded and counted."""
    from dvm.harness.audio import load_audio  # noqa: PLC0415 - harness modules load only when serving needs them

    if path.suffix.lower() == ".flac":
        import av  # noqa: PLC0415 - PyAV loads FFmpeg: only on first use

        try:
            with av.open(str(path)) as container:
                stream = container.streams.audio[0]
                if stream.duration and stream.time_base:
                    return float(stream.duration * stream.time_base)
        except (IndexError, OSError, ValueError, av.error.FFmpegError):
            pass  # decoding below says what is wrong
    try:
        return len(load_audio(path)) / SAMPLE_RATE
    except DvmError as exc:
        raise fail(f"{path.name} is not readable audio ({str(exc).split(': ', 1)[-1]})") from None


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
    from dvm.harness.audio import load_audio  # noqa: PLC0415 - harness modules load only when serving needs them

    return load_audio(clip_or_path.path if isinstance(clip_or_path, Clip) else clip_or_path)


def write_audio(path: str | Path, samples: np.ndarray, rate: int = SAMPLE_RATE) -> None:
    """Write float mono samples as 16-bit PCM: FLAC (lossless, about half the size) for ``.flac``, else WAV."""
    if Path(path).suffix.lower() != ".flac":
        write_wav(path, samples, rate)
        return
    import av  # noqa: PLC0415 - PyAV loads FFmpeg: only on first use

    pcm = pcm16(samples)
    with av.open(str(path), "w", format="flac") as container:
        stream = container.add_stream("flac", rate=rate, layout="mono")
        stream.format = "s16"
        for start in range(0, len(pcm), 4096):
            frame = av.AudioFrame.from_ndarray(pcm[start : start + 4096].reshape(1, -1), format="s16", layout="mono")
            frame.sample_rate = rate
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
