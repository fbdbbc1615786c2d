"""The child side of the probe's engine check: load one model on one device, transcribe 1.5 s of a
quiet tone, print one JSON line. Run in a subprocess by engines.check_in_child, so a driver crash
cannot take the probe down:

    python -m dvm.harness.probe.engine_check ENGINE DEVICE MODEL [GPU_INDEX]
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np


def _test_audio():
    t = np.arange(int(16000 * 1.5), dtype=np.float32) / 16000
    return (0.05 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


def run_inference(engine: str, device: str, model: str, gpu_index: int = 0) -> dict:
    """Load ``model`` on ``device`` and transcribe the test tone; never raises."""
    threads = max(1, min(4, os.cpu_count() or 1))
    start = time.perf_counter()
    try:
        if engine == "whispercpp":
            from pywhispercpp.model import Model  # noqa: PLC0415 - the child imports only the engine it checks

            if not Path(model).is_file():  # pywhispercpp would otherwise try to download by name
                raise FileNotFoundError(model)
            ctx = {"use_gpu": device != "cpu", "gpu_device": gpu_index}
            whisper = Model(model, context_params=ctx, redirect_whispercpp_logs_to=False, n_threads=threads,
                            print_progress=False, print_realtime=False, language="en")
            text = " ".join(s.text for s in whisper.transcribe(_test_audio())).strip()
        elif engine == "faster-whisper":
            from faster_whisper import WhisperModel  # noqa: PLC0415 - the child imports only the engine it checks

            if not Path(model).is_dir():  # faster-whisper would otherwise try the Hugging Face hub
                raise FileNotFoundError(model)
            compute = "int8" if device == "cpu" else "default"
            fw = WhisperModel(model, device=device, device_index=gpu_index, compute_type=compute, cpu_threads=threads)
            segments, _ = fw.transcribe(_test_audio(), beam_size=1, language="en", vad_filter=False)
            text = " ".join(s.text for s in segments).strip()
        else:
            raise ValueError(f"unknown engine {engine!r}")
    except Exception as exc:  # noqa: BLE001 - reported to the parent
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}", "seconds": time.perf_counter() - start}
    return {"ok": True, "error": None, "seconds": round(time.perf_counter() - start, 3), "text": text}


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    engine, device, model = args[:3]
    result = run_inference(engine, device, model, int(args[3]) if len(args) > 3 else 0)
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
