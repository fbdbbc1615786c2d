"""One matrix cell in a fresh process. The parent side (:func:`run_cell`, :func:`run_concurrent`)
writes a job, starts the child and collects its result; the child side (:func:`run`, :func:`main`)
loads one engine configuration and times it:

    python -m dvm.harness.bench.cellrun JOB.json RESULT.json

JOB holds the engine config, the clips (id, path, language, reference text), warm-up count,
repeats, and optionally ``workers`` (engines on threads in this one process, as `dvm serve` runs
them). RESULT gets one record per clip (per worker). A fresh process per cell keeps the peak-RSS figure
clean and stops one configuration's threads or caches from colouring the next.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from dvm import cudalibs
from dvm.harness.bench.load import LoadMonitor
from dvm.harness.procout import last_line
from dvm.harness.variants import registry
from dvm.stats import percentile

if TYPE_CHECKING:
    from dvm.harness.bench.plan import Cell

# ---------------------------------------------------------------------------- parent side


def _clip_jobs(clips: list) -> list[dict]:
    return [{"id": c.id, "path": str(c.path), "language": c.language, "text": c.text, "kind": c.kind, "tier": c.tier,
             "timed": c.timed} for c in clips]


def _spawn(cell: Cell, job: dict, workdir: Path, tag: str) -> tuple[subprocess.Popen, Path]:
    job_file, result_file = workdir / f"{tag}.job.json", workdir / f"{tag}.result.json"
    job_file.write_text(json.dumps(job))
    env = registry.subprocess_env(cell.variant) if cell.config.engine == "whispercpp" else dict(os.environ)
    if cell.config.engine == "faster-whisper" and cell.config.device != "cpu":
        env = cudalibs.child_env(env)  # cuBLAS/cuDNN from pip's NVIDIA wheels
    if cell.workers > 1:
        # several OpenMP thread teams busy-waiting on shared cores collapse (measured: 0.67 s -> 10-19 s);
        # passive waiting lets them share, and it is what `dvm serve` sets
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    process = subprocess.Popen([sys.executable, "-m", "dvm.harness.bench.cellrun", str(job_file), str(result_file)],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    return process, result_file


def _collect(process: subprocess.Popen, result_file: Path, cell: Cell) -> dict:
    _, stderr = process.communicate()
    if result_file.exists():
        result = json.loads(result_file.read_text())
    else:
        result = {"error": f"cell process died: {last_line(stderr, f'exit code {process.returncode}')}"}
    result["cell_id"] = cell.id
    result["variant"] = cell.variant
    result["workers"] = cell.workers
    if cell.config.engine == "whispercpp" and cell.variant != "wheel":
        result["variant_build"] = registry.installed_variants().get(cell.variant)
    return result


def run_cell(cell: Cell, clips: list, warmup: int, repeats: int, workdir: Path) -> dict:
    monitor = LoadMonitor()
    monitor.start()
    process, result_file = _spawn(cell, {"config": cell.config.as_dict(), "clips": _clip_jobs(clips),
                                         "warmup": warmup, "repeats": repeats}, workdir, "cell")
    try:
        result = _collect(process, result_file, cell)
    except KeyboardInterrupt:
        process.kill()
        raise
    result["machine_load"] = monitor.stop()
    return result


def run_concurrent(cell: Cell, clips: list, workdir: Path, repeats: int = 1) -> dict:
    """W engines on W threads in one process (as `dvm serve` runs them), each with the cell's
    threads, transcribe the clips at the same moment: throughput and per-utterance latency."""
    monitor = LoadMonitor()
    monitor.start()
    job = {"config": cell.config.as_dict(), "clips": _clip_jobs(clips), "warmup": 1, "repeats": repeats,
           "workers": cell.workers}
    process, result_file = _spawn(cell, job, workdir, "workers")
    try:
        result = _collect(process, result_file, cell)
    except KeyboardInterrupt:
        process.kill()
        raise
    load = monitor.stop()
    if "error" in result:
        return {"cell_id": cell.id, "workers": cell.workers, "variant": cell.variant, "error": result["error"]}
    latencies, audio_total, first, last = [], 0.0, float("inf"), 0.0
    for rec in result["records"]:
        latencies += rec["wall_seconds"]
        audio_total += rec["audio_seconds"] * len(rec["wall_seconds"])
        for began, ended in rec["stamps"]:
            first, last = min(first, began), max(last, ended)
    wall = last - first
    return {
        "cell_id": cell.id, "workers": cell.workers, "variant": cell.variant, "config": cell.config.as_dict(),
        "threads_total": cell.workers * cell.config.threads, "mode": "threads in one process",
        "utterances": len(latencies), "audio_seconds": audio_total, "wall_seconds": wall,
        "throughput_x_realtime": audio_total / wall if wall > 0 else None,
        "latency_p50_s": percentile(latencies, 50), "latency_p95_s": percentile(latencies, 95),
        "peak_rss_mb": result.get("peak_rss_mb"), "omp_wait_policy": result.get("omp_wait_policy"),
        "machine_load": load,
    }


# ---------------------------------------------------------------------------- child side


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
