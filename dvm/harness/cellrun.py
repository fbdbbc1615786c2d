"""The child side of a matrix cell: one fresh process loads one engine configuration and times it.

    python -m dvm.harness.cellrun JOB.json RESULT.json

JOB holds the engine config, the clips (id, path, language, reference text), warm-up count,
repeats, and optionally ``workers`` (engines on threads in this one process, as `dvm serve` runs
them). RESULT gets one record per clip (per worker). A fresh process per cell keeps the peak-RSS figure
clean and stops one configuration's threads or caches from colouring the next.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path


def _peak_rss_mb() -> float | None:
    try:
        import resource
    except ImportError:  # Windows
        try:
            import psutil  # optional there

            return psutil.Process().memory_info().peak_wset / 1e6
        except Exception:  # noqa: BLE001 - no figure rather than no result
            return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def _vram_mb() -> float | None:
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            pid = os.getpid()
            total = 0
            for i in range(pynvml.nvmlDeviceGetCount()):
                handle = pynvml.nvmlDeviceGetHandleByIndex(i)
                for proc in pynvml.nvmlDeviceGetComputeRunningProcesses(handle):
                    if proc.pid == pid and proc.usedGpuMemory:
                        total += proc.usedGpuMemory
            return total / 1e6
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # noqa: BLE001 - no NVIDIA driver/library: no VRAM figure
        return None


def _measure(engine, clips: list[dict], audio: dict, warmup: int, repeats: int, worker: int = 0) -> list[dict]:
    from dvm.harness import scoring
    from dvm.harness.engines.base import resolve_audio_ctx

    config = engine.config
    records = []
    for clip in clips:
        pcm = audio[clip["id"]]
        timed = clip.get("timed", True)  # an untimed clip is scored from one pass, no warm-up
        for _ in range(warmup if timed else 0):
            engine.transcribe(pcm)
        walls, stamps, result = [], [], None
        for _ in range(repeats if timed else 1):
            began = time.time()
            result = engine.transcribe(pcm)
            walls.append(result.seconds)
            stamps.append([began, time.time()])
        seconds = result.audio_seconds
        accuracy = scoring.score(clip.get("text"), result.text, clip.get("language", "en"), seconds)
        records.append({
            "clip_id": clip["id"],
            "clip_kind": clip.get("kind"),
            "tier": clip.get("tier"),
            "timed": timed,
            "language": clip.get("language"),
            "worker": worker,
            "audio_seconds": seconds,
            "audio_ctx_frames": resolve_audio_ctx(config.audio_ctx, seconds) if config.engine == "whispercpp" else None,
            "warmup": warmup if timed else 0,
            "repeats": len(walls),
            "wall_seconds": walls,
            "stamps": stamps,
            "median_s": statistics.median(walls),
            "min_s": min(walls),
            "median_rtf": statistics.median(walls) / seconds,
            "min_rtf": min(walls) / seconds,
            "spread": (max(walls) - min(walls)) / statistics.median(walls) if len(walls) > 1 else 0.0,
            "timings": result.timings,
            "text": result.text,
            "reference": clip.get("text"),
            "wer": accuracy.get("wer"),
            "cer": accuracy.get("cer"),
            "hallucination_wps": accuracy.get("hallucination_wps"),
            "score": accuracy,
        })
    return records


def run(job: dict) -> dict:
    """One configuration; with ``workers`` > 1, that many engines in this process, each on its own
    thread, all transcribing at once — the way `dvm serve` runs its workers."""
    import threading

    from dvm.harness import engines
    from dvm.harness.audio import load_audio

    config = engines.EngineConfig.from_dict(job["config"])
    workers = max(1, int(job.get("workers", 1)))
    pool = [engines.create(config) for _ in range(workers)]
    load_seconds = min(engine.load() for engine in pool)
    info = pool[0].info()
    audio = {clip["id"]: load_audio(clip["path"]) for clip in job["clips"]}
    warmup, repeats = int(job.get("warmup", 1)), int(job.get("repeats", 5))

    if workers == 1:
        records = _measure(pool[0], job["clips"], audio, warmup, repeats)
    else:
        for engine in pool:  # warm every engine before the common start
            engine.transcribe(next(iter(audio.values())))
        results: list[list[dict]] = [[] for _ in pool]
        errors: list[BaseException] = []

        def work(i: int) -> None:
            try:
                results[i] = _measure(pool[i], job["clips"], audio, 0, repeats, worker=i)
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(workers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]
        records = [record for worker_records in results for record in worker_records]
    for engine in pool:
        engine.close()
    return {
        "config": config.as_dict(),
        "info": info,
        "load_seconds": load_seconds,
        "workers": workers,
        "peak_rss_mb": _peak_rss_mb(),
        "vram_mb": _vram_mb() if config.device != "cpu" else None,
        "pid": os.getpid(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default"),
        "records": records,
    }


def main(argv: list[str]) -> int:
    job_file, result_file = argv
    job = json.loads(Path(job_file).read_text())
    try:
        result = run(job)
    except Exception as exc:  # noqa: BLE001 - reported to the parent as the cell's error
        result = {"error": f"{exc.__class__.__name__}: {exc}"}
    Path(result_file).write_text(json.dumps(result))
    return 0 if "error" not in result else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
