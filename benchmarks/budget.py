"""Hot-path budgets judged like the RTF gate: each stage's minimum divided by a calibration stage
timed in the same run (``test_calibration_kernel``: a fixed mix of interpreter and numpy work), so a
faster or slower machine of the same platform moves both and cancels out.

    python -m benchmarks.budget CURRENT.json BASELINE.json [--threshold 0.25] [--busy-cores 0.5]

A stage regresses when (current min / current calibration) / (baseline min / baseline calibration)
exceeds 1 + threshold. The absolute minima are shown beside the ratios. When other processes used
more than ``--busy-cores`` cores while the benchmarks ran (recorded by benchmarks/conftest.py), the
run is reported as "machine busy, not judged" and exits 3. Exit 0: within budget; 1: a regression;
2: unusable input.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

CALIBRATION = "test_calibration_kernel"
DEFAULT_THRESHOLD = 0.25
DEFAULT_BUSY_CORES = 0.5
EXIT_REGRESSION, EXIT_INPUT, EXIT_BUSY = 1, 2, 3


class BudgetError(Exception):
    pass


def minima(run: dict) -> dict[str, float]:
    return {b["name"]: float(b["stats"]["min"]) for b in run.get("benchmarks", [])}


def foreign_cores(run: dict) -> float | None:
    return ((run.get("machine_info") or {}).get("dvm_load") or {}).get("foreign_cores")


def judge(current: dict, baseline: dict, threshold: float = DEFAULT_THRESHOLD,
          busy_cores: float = DEFAULT_BUSY_CORES) -> dict:
    cur, base = minima(current), minima(baseline)
    if CALIBRATION not in base:
        raise BudgetError(f"the baseline has no {CALIBRATION} stage (recorded before budgets were normalised): "
                          "record a new one with nox -s perf -- --update-baseline")
    if CALIBRATION not in cur:
        raise BudgetError(f"this run has no {CALIBRATION} stage")
    scale = cur[CALIBRATION] / base[CALIBRATION]
    stages = []
    for name in sorted(set(base) - {CALIBRATION}):
        if name not in cur:
            raise BudgetError(f"this run lacks the baseline's stage {name}")
        ratio = (cur[name] / cur[CALIBRATION]) / (base[name] / base[CALIBRATION])
        stages.append({"stage": name, "baseline_min_s": base[name], "current_min_s": cur[name],
                       "absolute_ratio": cur[name] / base[name], "normalised_ratio": ratio,
                       "regressed": ratio > 1 + threshold})
    busy = foreign_cores(current)
    judged = busy is None or busy <= busy_cores
    return {"calibration_ratio": scale, "threshold": threshold, "foreign_cores": busy, "judged": judged,
            "ok": not judged or not any(s["regressed"] for s in stages), "stages": stages}


def render(verdict: dict) -> str:
    lines = [f"hot-path budgets: calibration ratio (this run / baseline) {verdict['calibration_ratio']:.3f}, "
             f"threshold +{verdict['threshold']:.0%} on the normalised minimum",
             f"{'stage':52} {'baseline min':>13} {'this run min':>13} {'abs':>6} {'norm':>6}"]
    for s in verdict["stages"]:
        flag = "  REGRESSED" if s["regressed"] else ""
        lines.append(f"{s['stage'][:52]:52} {s['baseline_min_s'] * 1e3:10.3f} ms {s['current_min_s'] * 1e3:10.3f} ms "
                     f"{s['absolute_ratio']:6.2f} {s['normalised_ratio']:6.2f}{flag}")
    busy = verdict["foreign_cores"]
    if not verdict["judged"]:
        lines.append(f"machine busy, not judged: other processes used {busy:.2f} cores while the benchmarks ran")
    elif not verdict["ok"]:
        lines.append("REGRESSION: " + ", ".join(s["stage"] for s in verdict["stages"] if s["regressed"]))
    else:
        lines.append("within budget" + (f" (other processes used {busy:.2f} cores meanwhile)" if busy is not None else ""))
    return "\n".join(lines)


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise BudgetError(f"cannot read {path}: {exc}") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.budget", description=__doc__.split("\n\n")[0])
    parser.add_argument("current", type=Path, help="pytest-benchmark JSON of this run")
    parser.add_argument("baseline", type=Path, help="pytest-benchmark JSON of the baseline")
    parser.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD)
    parser.add_argument("--busy-cores", type=float, default=DEFAULT_BUSY_CORES)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    try:
        verdict = judge(_read(args.current), _read(args.baseline), args.threshold, args.busy_cores)
    except BudgetError as exc:
        print(f"budget: error: {exc}", file=sys.stderr)
        return EXIT_INPUT
    print(json.dumps(verdict, indent=1) if args.json else render(verdict))
    if not verdict["judged"]:
        return EXIT_BUSY
    return 0 if verdict["ok"] else EXIT_REGRESSION


if __name__ == "__main__":
    sys.exit(main())
