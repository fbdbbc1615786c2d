"""The CI regression gate on RTF and WER.

Speed: for each cell and clip, the *minimum* RTF over the repeats (the least disturbed run) is
divided by a calibration figure measured in the same run (a fixed single-threaded matrix-multiply
kernel, see ``calibration``), so a slower or busier machine moves both and cancels out. A cell
regresses when the median over its clips of new/baseline normalised RTF exceeds 1 + threshold.

Accuracy: greedy decoding with the same weights, build and threads is deterministic, so any WER
increase beyond a tiny tolerance on any clip is a regression, and so is any word produced on an
expected-silence clip where the baseline produced none.

Speed is judged only against a baseline from the same CPU model (vendor, model name, cores, SIMD) and a
machine that was not busy: one platform id spans CPU models the calibration does not bridge.

Exit codes: 0 no regression, 1 regression, 2 unusable input, 3 no regression but speed not judged.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from dvm.errors import DvmError
from dvm.harness.bench.report import load_run

DEFAULT_RTF_THRESHOLD = 0.10
DEFAULT_WER_TOLERANCE = 0.005
# Speed is not judged when other processes kept more than this many cores busy during a cell
# (measured per cell by dvm.harness.bench.load): one extra busy process on a 2-core machine reads ~1.0.
DEFAULT_BUSY_CORES = 0.5
EXIT_NOT_JUDGED = 3

_KERNEL = """
import time, numpy as np
rng = np.random.default_rng(0)
a = rng.standard_normal((192, 192), dtype=np.float32)
b = rng.standard_normal((192, 192), dtype=np.float32)
best = float('inf')
for _ in range(15):
    t = time.perf_counter()
    for _ in range(40):
        a @ b
    best = min(best, time.perf_counter() - t)
print(best)
"""


def calibration(samples: int = 3) -> float:
    """Seconds for a fixed float32 matmul workload on one thread (min of several), in a subprocess."""
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    values = []
    for _ in range(samples):
        out = subprocess.run([sys.executable, "-c", _KERNEL], capture_output=True, text=True, env=env, check=True)
        values.append(float(out.stdout.strip()))
        time.sleep(0.05)
    return min(values)


@dataclass
class Finding:
    cell: str
    kind: str  # "rtf" | "wer" | "hallucination"
    baseline: float
    current: float
    change: float
    threshold: float
    clip: str | None = None


@dataclass
class Verdict:
    platform_id: str
    regressions: list[Finding] = field(default_factory=list)
    checked: list[Finding] = field(default_factory=list)
    calibration_ratio: float | None = None
    foreign_cores: float | None = None  # the most other processes used during any cell of this run
    speed_judged: bool = True  # False: RTF findings are shown but not judged (speed_note says why)
    speed_note: str | None = None

    @property
    def ok(self) -> bool:
        return not self.regressions


def _cells_by_id(run: dict, label: str) -> dict[str, dict]:
    out = {}
    for cell in run["cells"]:
        if "error" in cell:
            raise DvmError(f"{label} run has a failed cell {cell.get('cell_id')}: {cell['error']}")
        out[cell["cell_id"]] = cell
    return out


def machine(run: dict) -> tuple:
    """What a run's speed depends on beyond its platform id: the CPU's vendor, model name, cores and SIMD
    features (a virtual machine's model name can be as vague as "Intel(R) Xeon(R) Processor")."""
    cpu = (run.get("profile") or {}).get("cpu") or {}
    features = ",".join(sorted(k for k, v in (cpu.get("flags") or {}).items() if v)) or None
    return cpu.get("vendor"), cpu.get("brand"), cpu.get("logical_cores"), features


def _describe(key: tuple) -> str:
    vendor, brand, cores, _ = key
    return f"{brand or vendor or 'unknown CPU'}, {cores or '?'} cores"


def busiest(run: dict) -> float | None:
    """The most cores other processes used during any cell of a run (None where not measured)."""
    values = [(cell.get("machine_load") or {}).get("foreign_cores") for cell in run["cells"]]
    values = [v for v in values if v is not None]
    return max(values) if values else None


def compare(baseline: dict, current: dict, rtf_threshold: float = DEFAULT_RTF_THRESHOLD,
            wer_tolerance: float = DEFAULT_WER_TOLERANCE, busy_cores: float = DEFAULT_BUSY_CORES) -> Verdict:
    if baseline["platform_id"] != current["platform_id"]:
        raise DvmError(f"baseline is for {baseline['platform_id']}, this run is {current['platform_id']}: not comparable")
    base_cells, cur_cells = _cells_by_id(baseline, "baseline"), _cells_by_id(current, "current")
    missing = sorted(set(base_cells) - set(cur_cells))
    if missing:
        raise DvmError(f"current run lacks {len(missing)} baseline cell(s), e.g. {missing[0]}")
    base_cal, cur_cal = baseline.get("calibration_s"), current.get("calibration_s")
    scale = (cur_cal / base_cal) if base_cal and cur_cal else 1.0
    busy = busiest(current)
    verdict = Verdict(current["platform_id"], calibration_ratio=scale, foreign_cores=busy)
    base_machine, cur_machine = machine(baseline), machine(current)
    if base_machine != cur_machine and all(base_machine[:3]) and all(cur_machine[:3]):
        # one platform id covers several CPU models (AVX-512 on an AMD EPYC and on an Intel Xeon, say), and the
        # calibration kernel does not scale like whisper.cpp across them: only accuracy compares across CPUs
        verdict.speed_judged = False
        verdict.speed_note = (f"the baseline ran on another CPU ({_describe(base_machine)}; this run: {_describe(cur_machine)}), "
                              "and RTF does not compare across CPU models")
    elif busy is not None and busy > busy_cores:
        verdict.speed_judged = False
        verdict.speed_note = f"machine busy (other processes used up to {busy:.2f} cores during a cell)"
    for cell_id, base in base_cells.items():
        cur = cur_cells[cell_id]
        base_recs = {r["clip_id"]: r for r in base["records"]}
        cur_recs = {r["clip_id"]: r for r in cur["records"]}
        absent = sorted(set(base_recs) - set(cur_recs))
        if absent:
            raise DvmError(f"cell {cell_id} lacks clip {absent[0]} in the current run")
        ratios = []
        for clip_id, b in base_recs.items():
            c = cur_recs[clip_id]
            ratios.append((c["min_rtf"] / scale) / b["min_rtf"])
            bw, cw = b.get("wer"), c.get("wer")
            if bw is not None and cw is not None:
                finding = Finding(cell_id, "wer", bw, cw, cw - bw, wer_tolerance, clip_id)
                verdict.checked.append(finding)
                if cw - bw > wer_tolerance:
                    verdict.regressions.append(finding)
            bh, ch = b.get("hallucination_wps"), c.get("hallucination_wps")
            if bh is not None and ch is not None and ch > bh and ch > 0:
                finding = Finding(cell_id, "hallucination", bh, ch, ch - bh, 0.0, clip_id)
                verdict.regressions.append(finding)
        ratio = statistics.median(ratios)
        finding = Finding(cell_id, "rtf", statistics.median(r["min_rtf"] for r in base_recs.values()),
                          statistics.median(r["min_rtf"] for r in cur_recs.values()), ratio - 1.0, rtf_threshold)
        verdict.checked.append(finding)
        if ratio > 1.0 + rtf_threshold and verdict.speed_judged:
            verdict.regressions.append(finding)
    return verdict


def load(path: str | Path) -> dict:
    return load_run(path)


def update_baseline(run_dir: str | Path, baseline: str | Path) -> Path:
    data = load_run(run_dir)
    data.pop("_path", None)
    baseline = Path(baseline)
    baseline.parent.mkdir(parents=True, exist_ok=True)
    baseline.write_text(json.dumps(data, indent=1))
    return baseline


def render(verdict: Verdict) -> str:
    lines = [f"gate for {verdict.platform_id}: calibration ratio (this run / baseline) {verdict.calibration_ratio:.3f}"]
    shown = verdict.regressions if verdict.regressions else [f for f in verdict.checked if f.kind == "rtf"]
    title = "REGRESSIONS" if verdict.regressions else "no regression"
    lines.append(f"{title}:")
    lines.append(f"  {'cell':58} {'what':13} {'clip':16} {'baseline':>9} {'now':>9} {'change':>8} {'limit':>7}")
    for f in shown:
        change = f"{f.change * 100:+.1f}%" if f.kind == "rtf" else f"{f.change:+.3f}"
        limit = f"{f.threshold * 100:.0f}%" if f.kind == "rtf" else f"{f.threshold:.3f}"
        lines.append(f"  {f.cell:58} {f.kind:13} {(f.clip or '(median)'):16} {f.baseline:9.4f} {f.current:9.4f} {change:>8} {limit:>7}")
    if not verdict.speed_judged:
        lines.append(f"speed: not judged: {verdict.speed_note}; accuracy was judged")
    return "\n".join(lines)
