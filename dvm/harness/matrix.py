"""The RTF x WER matrix: cells (engine configurations), the default and quick matrices, and the
runner that measures each cell in a fresh subprocess."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from dvm.harness.engines import EngineConfig
from dvm.harness.errors import DvmError


GPU_VARIANTS = ("vulkan", "cuda")  # whisper.cpp builds whose cells ask for the GPU backend


@dataclass
class Cell:
    config: EngineConfig
    variant: str = "wheel"  # whisper.cpp build: wheel | native | openblas | vulkan | cuda ...
    workers: int = 1  # >1: concurrency run, W processes x config.threads threads

    def __post_init__(self):
        if self.config.engine == "whispercpp" and self.variant in GPU_VARIANTS and self.config.device == "cpu":
            self.config.device = "gpu"  # the build exists to use its GPU backend; the cell reports where it ran

    @property
    def id(self) -> str:
        c = self.config
        engine = f"whispercpp[{self.variant}]" if c.engine == "whispercpp" else c.engine
        parts = [engine, c.model, c.quant, f"t{c.threads}", f"b{c.beam_size}", f"ctx-{c.audio_ctx}"]
        if c.temperature_fallback:
            parts.append("tfb")
        if c.device != "cpu":
            parts.append(c.device)
        if self.workers > 1:
            parts.append(f"w{self.workers}")
        return "/".join(parts)


@dataclass
class Plan:
    cells: list[Cell]
    clips: list  # dvm.harness.clips.Clip
    warmup: int = 1
    repeats: int = 5


def expand(engines: list[str], models: list[str], threads: list[int], beams: list[int], contexts: list[str],
           whispercpp_quants: list[str], fw_quants: list[str], variants: list[str], language: str = "en") -> list[Cell]:
    """The cross product, with each engine's own quantisation axis (and whisper.cpp's build variants)."""
    cells = []
    for engine, model, t, b in itertools.product(engines, models, threads, beams):
        if engine == "whispercpp":
            for variant, quant, ctx in itertools.product(variants, whispercpp_quants, contexts):
                cells.append(Cell(EngineConfig("whispercpp", model, quant, t, b, ctx, language), variant))
        elif engine == "faster-whisper":
            for quant in fw_quants:
                cells.append(Cell(EngineConfig("faster-whisper", model, quant, t, b, "full", language)))
        elif engine == "remote":  # the server decides weights and build; one cell per context policy
            for ctx in contexts:
                cells.append(Cell(EngineConfig("remote", model, "f16", t, b, ctx, language)))
        else:
            raise DvmError(f"unknown engine {engine!r}")
    return cells


# ---------------------------------------------------------------------------- machine load


def _cpu_jiffies() -> tuple[int, int] | None:
    """(busy, total) jiffies from /proc/stat, or None off Linux."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return None
    values = list(map(int, fields))
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return sum(values) - idle, sum(values)


def _children_cpu() -> float:
    """CPU seconds used by finished child processes (0 where the platform cannot tell, e.g. Windows)."""
    try:
        import resource
    except ImportError:
        return 0.0
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class LoadMonitor:
    """How much CPU *other* processes used while a cell ran (in cores), from /proc/stat minus our children."""

    def __init__(self):
        self.ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") and "SC_CLK_TCK" in os.sysconf_names else 100

    def start(self):
        self._jiffies = _cpu_jiffies()
        self._children = _children_cpu()
        self._wall = time.monotonic()
        self._load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None

    def stop(self) -> dict:
        wall = time.monotonic() - self._wall
        ours = _children_cpu() - self._children
        now = _cpu_jiffies()
        out = {"loadavg_1m_before": self._load, "wall_s": wall}
        if self._jiffies and now:
            busy = (now[0] - self._jiffies[0]) / self.ticks
            out["foreign_cores"] = max(0.0, (busy - ours) / wall) if wall > 0 else 0.0
        return out


# ---------------------------------------------------------------------------- running


def _clip_jobs(clips: list) -> list[dict]:
    return [{"id": c.id, "path": str(c.path), "language": c.language, "text": c.text, "kind": c.kind, "tier": c.tier,
             "timed": c.timed} for c in clips]


def _spawn(cell: Cell, job: dict, workdir: Path, tag: str) -> tuple[subprocess.Popen, Path]:
    from dvm.harness import variants

    job_file, result_file = workdir / f"{tag}.job.json", workdir / f"{tag}.result.json"
    job_file.write_text(json.dumps(job))
    env = variants.subprocess_env(cell.variant) if cell.config.engine == "whispercpp" else dict(os.environ)
    if cell.workers > 1:
        # several OpenMP thread teams busy-waiting on shared cores collapse (measured: 0.67 s -> 10-19 s);
        # passive waiting lets them share, and it is what `dvm serve` sets
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    process = subprocess.Popen([sys.executable, "-m", "dvm.harness.cellrun", str(job_file), str(result_file)],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    return process, result_file


def _collect(process: subprocess.Popen, result_file: Path, cell: Cell) -> dict:
    _, stderr = process.communicate()
    if result_file.exists():
        result = json.loads(result_file.read_text())
    else:
        tail = (stderr or "").strip().splitlines()[-1:] or [f"exit code {process.returncode}"]
        result = {"error": f"cell process died: {tail[0]}"}
    result["cell_id"] = cell.id
    result["variant"] = cell.variant
    result["workers"] = cell.workers
    if cell.config.engine == "whispercpp" and cell.variant != "wheel":
        from dvm.harness import variants

        result["variant_build"] = variants.installed_variants().get(cell.variant)
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
    latencies.sort()
    wall = last - first
    return {
        "cell_id": cell.id, "workers": cell.workers, "variant": cell.variant, "config": cell.config.as_dict(),
        "threads_total": cell.workers * cell.config.threads, "mode": "threads in one process",
        "utterances": len(latencies), "audio_seconds": audio_total, "wall_seconds": wall,
        "throughput_x_realtime": audio_total / wall if wall > 0 else None,
        "latency_p50_s": _percentile(latencies, 50), "latency_p95_s": _percentile(latencies, 95),
        "peak_rss_mb": result.get("peak_rss_mb"), "omp_wait_policy": result.get("omp_wait_policy"),
        "machine_load": load,
    }


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    k = (len(values) - 1) * q / 100
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)
