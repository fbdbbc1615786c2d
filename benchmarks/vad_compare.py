"""Silero VAD (ONNX, what the pipeline uses) against WebRTC VAD, side by side on the dialogue fixtures:
frame accuracy against the manifest's turn boundaries, and cost per 20 ms of audio.

    python -m benchmarks.vad_compare [--json]      (needs `pip install webrtcvad-wheels`)
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np

from dvm.harness.clips import load_clips, read_audio
from dvm.server.vad import WINDOW, StreamingVad

RATE = 16000


def truth(clip, n_frames: int, frame: int) -> np.ndarray:
    labels = np.zeros(n_frames, dtype=bool)
    for turn in clip.turns:
        a, b = int(turn["start"] * RATE / frame), int(np.ceil(turn["end"] * RATE / frame))
        labels[a:b] = True
    return labels


def score(pred: np.ndarray, gold: np.ndarray) -> dict:
    tp = int(np.sum(pred & gold)); fp = int(np.sum(pred & ~gold)); fn = int(np.sum(~pred & gold))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return {"accuracy": float(np.mean(pred == gold)), "precision": precision, "recall": recall,
            "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0}


def silero(audio: np.ndarray) -> tuple[np.ndarray, float]:
    vad = StreamingVad()
    started = time.perf_counter()
    probs = np.concatenate([vad.process(audio[i:i + 320]) for i in range(0, audio.size, 320)])
    return probs >= 0.5, time.perf_counter() - started


def webrtc(audio: np.ndarray, aggressiveness: int = 2) -> tuple[np.ndarray, float]:
    import webrtcvad

    vad = webrtcvad.Vad(aggressiveness)
    pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()
    frame = 480  # 30 ms
    started = time.perf_counter()
    flags = [vad.is_speech(pcm[i * 2:(i + frame) * 2], RATE) for i in range(0, audio.size - frame + 1, frame)]
    return np.array(flags, dtype=bool), time.perf_counter() - started


def main() -> int:
    rows = []
    for clip in (c for c in load_clips() if c.kind == "dialogue"):
        audio = read_audio(clip)
        seconds = audio.size / RATE
        for name, (pred, cost), frame in (("silero-v6", silero(audio), WINDOW), ("webrtc-2", webrtc(audio, 2), 480),
                                          ("webrtc-3", webrtc(audio, 3), 480)):
            gold = truth(clip, pred.size, frame)
            rows.append({"clip": clip.id, "vad": name, **score(pred, gold), "us_per_20ms": cost / (seconds / 0.02) * 1e6})
    for clip in (c for c in load_clips() if c.kind in ("noise", "silence")):
        audio = read_audio(clip)
        for name, (pred, _) in (("silero-v6", silero(audio)), ("webrtc-2", webrtc(audio, 2)), ("webrtc-3", webrtc(audio, 3))):
            rows.append({"clip": clip.id, "vad": name, "false_speech_fraction": float(pred.mean())})
    if "--json" in sys.argv:
        print(json.dumps(rows, indent=1))
    else:
        for r in rows:
            if "false_speech_fraction" in r:
                print(f"{r['clip']:16} {r['vad']:10} frames called speech on a clip with none: {r['false_speech_fraction']:.3f}")
                continue
            print(f"{r['clip']:16} {r['vad']:10} acc {r['accuracy']:.3f} P {r['precision']:.3f} R {r['recall']:.3f} "
                  f"F1 {r['f1']:.3f}  {r['us_per_20ms']:.1f} us/20ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
