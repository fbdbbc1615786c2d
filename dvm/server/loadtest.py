"""Serving benchmark: N synthetic speakers talk at once through the real pipeline.

Each speaker plays reference clips as Discord would deliver them (48 kHz stereo s16, 20 ms frames,
in real time, nothing sent while they are silent), and we measure end-of-speech -> transcript
latency (p50/p95), speech start -> first interim line, throughput, drops and the cost of live
captions, for the fixed silence timeout ("fixed") and live captions ("live") in the same run.
``--accuracy`` also plays the dialogue clips and the real-speech tier through both modes and
scores the final lines (WER, and utterances split or merged against the reference).

    python -m dvm.server.loadtest --speakers 1 4 8 [--modes fixed live] [--rounds 3] [--accuracy] [--config chosen.toml] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np

from dvm.harness.audio import SAMPLE_RATE
from dvm.stats import percentile

FRAME_MS = 20
FRAME_BYTES = 48000 * FRAME_MS // 1000 * 2 * 2  # 48 kHz, stereo, s16


def to_discord_pcm(pcm16k: np.ndarray) -> bytes:
    """16 kHz mono float32 -> 48 kHz stereo s16le, as a Discord receiver hands it over (FFmpeg resampler)."""
    import av

    resampler = av.AudioResampler(format="s16", layout="stereo", rate=48000)
    frame = av.AudioFrame.from_ndarray((np.clip(pcm16k, -1, 1) * 32767).astype("<i2")[None, :], format="s16", layout="mono")
    frame.sample_rate = SAMPLE_RATE
    chunks = [f.to_ndarray().reshape(-1) for f in resampler.resample(frame) + resampler.resample(None)]
    return np.concatenate(chunks).astype("<i2").tobytes()


def frames(pcm: bytes) -> list[bytes]:
    return [pcm[i:i + FRAME_BYTES] for i in range(0, len(pcm) - FRAME_BYTES + 1, FRAME_BYTES)]


def speaker_tracks(clip) -> dict[str, list[tuple[float, np.ndarray]]]:
    """Per speaker, the (start second, audio) pieces they say: dialogue turns, or the whole clip."""
    from dvm.harness.clips import read_audio

    audio = read_audio(clip)
    if not clip.turns:
        return {"A": [(0.0, audio)]}
    tracks: dict[str, list] = {}
    for turn in clip.turns:
        a, b = int(turn["start"] * 16000), int(turn["end"] * 16000)
        pad = 1600  # 100 ms either side: the turn boundaries are where the TTS audio starts and stops
        tracks.setdefault(turn["speaker"], []).append((max(0.0, turn["start"] - 0.1), audio[max(0, a - pad):b + pad]))
    return tracks


def schedule(pieces: dict[str, list[tuple[float, np.ndarray]]], offset: float = 0.0, prefix: str = ""):
    """(time, speaker, frame) events: each piece's frames at 20 ms spacing from its start."""
    events = []
    for speaker, spoken in pieces.items():
        for start, audio in spoken:
            for i, frame in enumerate(frames(to_discord_pcm(audio))):
                events.append((offset + start + i * FRAME_MS / 1000, prefix + speaker, frame))
    events.sort(key=lambda e: e[0])
    return events


def play(pipeline, session_id: str, events, names: dict[str, str] | None = None, speed: float = 1.0) -> float:
    """Feed events in (scaled) real time; returns the wall time the last frame went in."""
    names = names or {}
    began = time.monotonic()
    for at, speaker, frame in events:
        delay = at / speed - (time.monotonic() - began)
        if delay > 0:
            time.sleep(delay)
        pipeline.feed(session_id, speaker, names.get(speaker, speaker), frame)
    return time.monotonic()


def run(n_speakers: int, settings, clips: list, store=None, rounds: int = 1, gap_s: float = 2.0) -> dict:
    """Each of ``n_speakers`` says ``rounds`` clips one after another (``gap_s`` of silence between),
    the speakers starting 0.25 s apart, all at once through one pipeline."""
    from dvm.harness import engines
    from dvm.server.pipeline import Pipeline

    lines = []
    lock = threading.Lock()

    def on_line(line):
        with lock:
            lines.append(line)

    pipeline = Pipeline(lambda: engines.create(settings.engine), store, settings, on_line=on_line)
    pipeline.start()
    events = []
    spoken = 0
    said = []
    for i in range(n_speakers):
        at, spoken_pieces = 0.0, []
        for r in range(max(1, rounds)):
            clip = clips[(i + r * n_speakers) % len(clips)]
            said.append(clip)
            spoken_pieces.append((at, _read(clip)))
            at += _read(clip).size / 16000 + gap_s
            spoken += 1
        events += schedule({"A": spoken_pieces}, offset=0.25 * i, prefix=f"spk{i}-")
    events.sort(key=lambda e: e[0])
    started = time.monotonic()
    play(pipeline, "load", events)
    pipeline.wait_idle(timeout=300)
    deadline = time.monotonic() + settings.silence_timeout_ms / 1000 + 30
    while len(lines) < spoken and time.monotonic() < deadline:
        time.sleep(0.05)
    pipeline.wait_idle(timeout=300)
    wall = time.monotonic() - started
    stats = pipeline.stats()
    firsts = sorted(pipeline.first_interim_latencies)
    pipeline.stop(drain=True)
    latencies = sorted(l.latency_s for l in lines if l.status == "ok")
    audio_s = sum(_read(clip).size / 16000 for clip in said)
    return {
        "speakers": n_speakers, "utterances": len(lines), "ok": sum(l.status == "ok" for l in lines),
        "dropped": stats["dropped"], "failed": stats["failed"], "wall_s": wall, "audio_s": audio_s,
        "latency_p50_s": percentile(latencies, 50), "latency_p95_s": percentile(latencies, 95), "latency_max_s": latencies[-1] if latencies else None,
        "silence_timeout_s": settings.silence_timeout_ms / 1000, "workers": stats["workers"], "threads": stats["threads"],
        "engine": f"{settings.engine.engine}/{settings.engine.model}/{settings.engine.quant}/ctx-{settings.engine.audio_ctx}",
        "mode": "live" if settings.live else "fixed", "rounds": rounds, "lent_decodes": stats.get("lent_decodes", 0),
        "first_interim_p50_s": percentile(firsts, 50), "first_interim_max_s": firsts[-1] if firsts else None,
        "live": stats["live"],
    }


def accuracy(settings, clips: list, speakers: int = 8, gap_s: float = 1.5) -> dict:
    """Play ``clips`` in real time, spread over ``speakers`` voices (a dialogue clip keeps its own
    two), each voice's clips one after another with ``gap_s`` of silence; score the final lines.

    Per clip (per dialogue turn): the lines that started inside it, joined, against its reference;
    ``split`` counts references heard as more lines than they have, ``merged`` those heard as fewer."""
    from dvm.harness import engines, scoring
    from dvm.server.pipeline import Pipeline

    lines, lock = [], threading.Lock()

    def on_line(line):
        with lock:
            lines.append(line)

    pipeline = Pipeline(lambda: engines.create(settings.engine), None, settings, on_line=on_line)
    pipeline.start()
    pieces: dict[str, list] = {}
    expected = []  # (speaker, start, end, reference text, reference utterance count)
    clocks = [0.25 * i for i in range(speakers)]
    for n, clip in enumerate(clips):
        voice = n % speakers
        if clip.turns:
            for speaker, spoken in speaker_tracks(clip).items():
                name = f"v{voice}-{clip.id}-{speaker}"
                pieces[name] = [(clocks[voice] + start, audio) for start, audio in spoken]
                for turn in (t for t in clip.turns if t["speaker"] == speaker):
                    expected.append((name, clocks[voice] + turn["start"] - 0.15, clocks[voice] + turn["end"] + 0.15, turn["text"], 1))
            clocks[voice] += clip.seconds + gap_s
            continue
        name = f"v{voice}"
        pieces.setdefault(name, []).append((clocks[voice], _read(clip)))
        expected.append((name, clocks[voice], clocks[voice] + clip.seconds, clip.text, 1))
        clocks[voice] += clip.seconds + gap_s
    began = time.monotonic()
    play(pipeline, "acc", schedule(pieces))
    pipeline.flush("acc")
    pipeline.wait_idle(timeout=300)
    stats = pipeline.stats()
    pipeline.stop(drain=True)
    scores, split, merged, heard_lines = [], 0, 0, 0
    for name, start, end, text, count in expected:
        mine = sorted((l for l in lines if l.speaker_id == name and start - 0.3 <= l.start < end), key=lambda l: l.start)
        heard_lines += len(mine)
        split += len(mine) > count
        merged += len(mine) < count
        scores.append(scoring.score(text, " ".join(l.text for l in mine), "en"))
    total = scoring.aggregate(scores)
    return {"mode": "live" if settings.live else "fixed", "clips": len(clips), "references": len(expected),
            "lines": heard_lines, "split": split, "merged_or_missed": merged, "pooled_wer": total["pooled_wer"],
            "wall_s": time.monotonic() - began, "dropped": stats["dropped"], "live": stats["live"]}


_AUDIO_CACHE: dict = {}


def _read(clip) -> np.ndarray:
    from dvm.harness.clips import read_audio

    if clip.id not in _AUDIO_CACHE:
        _AUDIO_CACHE[clip.id] = read_audio(clip)
    return _AUDIO_CACHE[clip.id]


def main(argv: list[str] | None = None) -> int:
    from dvm.harness.clips import load_clips
    from dvm.server import config

    parser = argparse.ArgumentParser(prog="python -m dvm.server.loadtest", description="N simultaneous speakers through the serving pipeline.")
    parser.add_argument("--speakers", nargs="+", type=int, default=[1, 4, 8])
    parser.add_argument("--config", type=Path, help="chosen.toml (default: built-in serving defaults)")
    parser.add_argument("--workers", type=int)
    parser.add_argument("--rounds", type=int, default=3, help="clips each speaker says in turn, 2 s apart (default 3)")
    parser.add_argument("--modes", nargs="+", choices=["fixed", "live"], default=["fixed", "live"],
                        help="fixed: end an utterance after the silence timeout only; live: speculative decode, early "
                             "endpoint, interim lines (default: both, in this order, in one run)")
    parser.add_argument("--accuracy", action="store_true",
                        help="also play the dialogue clips and the real-speech tier through each mode and score the finals")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as `dvm serve` does (see dvm/server/main.py)
    settings = config.load(args.config)
    if args.workers:
        settings.workers = args.workers
    every = load_clips()
    clips = [c for c in every if c.text and c.language == "en" and c.kind in ("clean", "human")]
    results, scored = [], []
    for mode in args.modes:
        settings.live = mode == "live"
        for n in args.speakers:
            result = run(n, settings, clips, rounds=args.rounds)
            results.append(result)
            if not args.json:
                print(_describe(result), flush=True)
    if args.accuracy:
        material = [c for c in every if c.language == "en" and c.text and (c.kind == "dialogue" or c.tier == "real")]
        for mode in args.modes:
            settings.live = mode == "live"
            result = accuracy(settings, material)
            scored.append(result)
            if not args.json:
                print(f"{mode} accuracy: WER {result['pooled_wer']:.3f} over {result['references']} references "
                      f"({result['clips']} clips), {result['lines']} lines, split {result['split']}, merged/missed "
                      f"{result['merged_or_missed']}, dropped {result['dropped']}", flush=True)
    if args.json:
        print(json.dumps({"latency": results, "accuracy": scored} if args.accuracy else results, indent=1))
    return 0


def _describe(result: dict) -> str:
    live = result["live"]
    extra = ""
    if result["mode"] == "live":
        spec = live["speculative"]
        first = result["first_interim_p50_s"]
        extra = (f"; speculative {spec['started']} started / {spec['used']} used / {spec['wasted']} wasted, "
                 f"{live['early_endpoints']} early endpoints, {live['interim']['decodes']} interim decodes"
                 + (f", first interim p50 {first:.2f} s" if first is not None else ""))
    cpu = live.get("cpu_s_per_audio_s")
    return (f"{result['mode']} {result['speakers']} speaker(s): p50 {result['latency_p50_s']:.2f} s, p95 {result['latency_p95_s']:.2f} s, "
            f"{result['ok']}/{result['utterances']} ok, dropped {result['dropped']}"
            + (f", {cpu:.3f} CPU s per audio s" if cpu is not None else "") + extra
            + f" (silence timeout {result['silence_timeout_s']:.2f} s, {result['workers']}x{result['threads']} {result['engine']})")


if __name__ == "__main__":
    sys.exit(main())
