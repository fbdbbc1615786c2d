"""`dvm bench` end to end: run the plan's cells (then the anchors and the serving shapes of the
winner), choose, and write the run directory (results.json, tables, plot, chosen.toml)."""

from __future__ import annotations

import datetime as _dt
import os
import tempfile
from pathlib import Path
from typing import Callable

from dvm import __version__
from dvm.errors import DvmError
from dvm.harness import models
from dvm.harness.bench import anchor as wcpp_anchor
from dvm.harness.bench import choose as chooser
from dvm.harness.bench import report
from dvm.harness.bench.cellrun import run_cell, run_concurrent
from dvm.harness.bench.gate import calibration
from dvm.harness.bench.plan import BenchOptions, Cell, Plan, plan
from dvm.harness.engines import EngineConfig
from dvm.harness.probe import platform_id as _platform_id
from dvm.harness.variants.tools import tool_path

__all__ = ["BenchOptions", "add_anchors", "concurrency_cells", "run"]

OnCell = Callable[[int, int, Cell, dict], None]


def add_anchors(cells: list[dict], the_plan: Plan) -> None:
    """For whisper.cpp cells whose build has whisper-cli: the CLI's warm time on one clip, and dvm / CLI."""
    speech = [c for c in the_plan.clips if c.text]
    clip = next((c for c in speech if c.id == "en-jfk"), speech[0] if speech else None)
    if clip is None:
        return
    for cell in cells:
        cfg = cell.get("config") or {}
        if "error" in cell or cfg.get("engine") != "whispercpp" or cfg.get("beam_size", 1) != 1:
            continue
        variant = cell.get("variant", "wheel")
        if tool_path(variant, "whisper-cli") is None:
            cell["anchor"] = {"skipped": f"whisper-cli for {variant} is not built (nox -s build-whispercpp -- {variant})"}
            continue
        record = next((r for r in cell["records"] if r["clip_id"] == clip.id), None)
        try:
            result = wcpp_anchor.anchor(variant, models.ensure_ggml(cfg["model"], cfg["quant"]), clip.path, cfg["threads"],
                                        cfg["audio_ctx"], repeats=3, trials=2, gpu=cfg.get("device", "cpu") != "cpu")
        except DvmError as exc:
            cell["anchor"] = {"error": str(exc)}
            continue
        cell["anchor"] = {"clip": clip.id, "cli_warm_s": result["warm_s"], **wcpp_anchor.anchor_ratio(record["median_s"], result)}


def concurrency_cells(winner: dict, cores: int, workers: list[int] | None = None) -> list[Cell]:
    """Workers x threads for the winning configuration: within the cores, and one step beyond; or, with
    ``workers``, those worker counts with cores/W threads each (a GPU cell's streams share one device)."""
    config = EngineConfig.from_dict(winner["config"])
    if workers:
        shapes = sorted({(w, max(1, cores // w)) for w in workers if w >= 1})
    else:
        shapes = sorted({(w, max(1, cores // w)) for w in (1, 2, 4) if w <= cores} | {(2, max(1, cores // 2) * 2)})
    cells = []
    for workers, threads in shapes:
        cfg = EngineConfig.from_dict({**config.as_dict(), "threads": threads})
        cells.append(Cell(cfg, winner.get("variant", "wheel"), workers))
    return cells


def _new_run(options: BenchOptions, the_plan: Plan, profile: dict, platform_id: str) -> dict:
    return {
        "schema": report.SCHEMA, "dvm_version": __version__, "platform_id": platform_id,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "profile": profile,
        "plan": {"quick": options.quick, "warmup": the_plan.warmup, "repeats": the_plan.repeats,
                 "clips": [c.id for c in the_plan.clips], "cells": [c.id for c in the_plan.cells]},
        "cells": [], "concurrency": [], "interrupted": False, "chosen": None,
    }


def _measure(options: BenchOptions, the_plan: Plan, run_data: dict, total: int, cores: int, on_cell: OnCell | None) -> bool:
    """The cells, the anchors, the winner's serving shapes into ``run_data``; True when Ctrl-C stopped it."""
    with tempfile.TemporaryDirectory(prefix="dvm-bench-") as tmp:
        workdir = Path(tmp)
        try:
            for i, cell in enumerate(the_plan.cells, 1):
                result = run_cell(cell, the_plan.clips, the_plan.warmup, the_plan.repeats, workdir)
                run_data["cells"].append(result)
                if on_cell:
                    on_cell(i, total, cell, result)
            if options.anchor:
                add_anchors(run_data["cells"], the_plan)
            choice = chooser.choose(run_data["cells"], options.wer_budget)
            if choice and options.concurrency:
                speech = [c for c in the_plan.clips if c.text and c.timed]
                for j, cell in enumerate(concurrency_cells(choice["cell"], cores, options.workers), len(the_plan.cells) + 1):
                    result = run_concurrent(cell, speech, workdir, repeats=1)
                    run_data["concurrency"].append(result)
                    if on_cell:
                        on_cell(j, total, cell, result)
        except KeyboardInterrupt:
            return True
    return False


def _write_choice(run_data: dict, options: BenchOptions, out_dir: Path, platform_id: str, interrupted: bool) -> None:
    """chosen.toml in the run directory (and, for a complete run, this platform's copy in DVM_HOME)."""
    choice = chooser.choose(run_data["cells"], options.wer_budget)
    if not choice:
        return
    serving = chooser.choose_serving(run_data["concurrency"])
    toml_text = chooser.render_toml(platform_id, choice, serving, str(out_dir))
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "chosen.toml").write_text(toml_text)
    if not interrupted:
        home_copy = chooser.chosen_path(platform_id)
        home_copy.parent.mkdir(parents=True, exist_ok=True)
        home_copy.write_text(toml_text)
    summary = choice["summary"]
    run_data["chosen"] = {"cell": summary["cell"], "rule": choice["rule"], "median_rtf": summary["median_rtf"], "wer": summary["wer"],
                          "serving": {"workers": serving["workers"], "threads": serving["config"]["threads"]} if serving else None}


def run(options: BenchOptions, out_dir: Path, profile: dict, on_cell: OnCell | None = None,
        on_start: Callable[[int], None] | None = None) -> dict:
    """Run the matrix and write out_dir; Ctrl-C keeps finished cells (then re-raises)."""
    the_plan = plan(options, profile)
    platform_id = _platform_id(profile)
    cores = os.cpu_count() or 2
    shapes = len(concurrency_cells({"config": the_plan.cells[0].config.as_dict()}, cores, options.workers)) if options.concurrency else 0
    total = len(the_plan.cells) + shapes
    if on_start:
        on_start(total)
    run_data = _new_run(options, the_plan, profile, platform_id)
    calibrations = [calibration()]
    interrupted = _measure(options, the_plan, run_data, total, cores, on_cell)
    run_data["interrupted"] = interrupted
    if not interrupted:
        calibrations.append(calibration())
    run_data["calibration_s"] = min(calibrations)
    run_data["calibration_samples_s"] = calibrations
    _write_choice(run_data, options, out_dir, platform_id, interrupted)
    report.write_outputs(run_data, out_dir)
    if interrupted:
        raise KeyboardInterrupt
    return run_data
