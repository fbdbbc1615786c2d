"""`dvm bench`: plan the matrix for this machine, run it, choose, and write the run directory."""

from __future__ import annotations

import datetime as _dt
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from dvm import __version__
from dvm.harness import choose as chooser
from dvm.harness import clips as clipsmod
from dvm.harness import models, report, variants
from dvm.harness.engines import EngineConfig
from dvm.harness.errors import DvmError
from dvm.harness.matrix import Cell, Plan, expand, run_cell, run_concurrent



@dataclass
class BenchOptions:
    clips_dir: Path | None = None
    quick: bool = False
    engines: list[str] | None = None
    models: list[str] | None = None
    threads: list[int] | None = None
    beams: list[int] | None = None
    contexts: list[str] | None = None
    quants: list[str] | None = None
    variants: list[str] | None = None
    repeats: int | None = None
    warmup: int = 1
    concurrency: bool = True
    wer_budget: float = chooser.DEFAULT_WER_BUDGET
    remote_url: str | None = None
    anchor: bool = False  # also time whisper.cpp's own whisper-cli on the same work (where built)
    tiers: list[str] | None = None  # only clips of these tiers (None: all)


def default_clips_dir() -> Path:
    directory = clipsmod.default_clips_dir()
    if directory.is_dir():
        return directory
    raise DvmError(f"no reference clips at {directory}; pass --clips DIR or set DVM_CLIPS_DIR (manifest.json + WAVs, like fixtures/audio)")


def select_clips(all_clips: list, quick: bool, tiers: list[str] | None = None) -> list:
    """English speech with a reference + expected-silence clips; the quick set: 3 speech kinds + 1 silence,
    all timed. ``tiers`` keeps only the clips of those tiers."""
    if tiers:
        known = {c.tier for c in all_clips}
        unknown = sorted(set(tiers) - known)
        if unknown:
            raise DvmError(f"no clips of tier {', '.join(unknown)} (the clips have: {', '.join(sorted(known))})")
        all_clips = [c for c in all_clips if c.tier in tiers]
    elif quick:
        all_clips = [c for c in all_clips if c.timed]
    speech = [c for c in all_clips if c.text and c.language.startswith("en") and c.kind != "dialogue"]
    silent = [c for c in all_clips if c.text == ""]
    unscored = [c for c in all_clips if c.text is None]
    if not quick:
        return speech + silent + unscored
    chosen, kinds = [], set()
    for clip in speech:
        if clip.kind not in kinds:
            chosen.append(clip)
            kinds.add(clip.kind)
        if len(chosen) == 3:
            break
    return chosen + silent[:1]


def available_models() -> list[str]:
    names = []
    for name in models.PIP_MODELS:
        try:
            models.pip_source_dirs(name)
            names.append(name)
        except DvmError:
            continue
    return names or [models.DEFAULT_MODEL]


def _real_vulkan_gpu(profile: dict | None) -> bool:
    """Whether the probe saw a Vulkan device that is not a CPU emulating one (Mesa's lavapipe)."""
    devices = (((profile or {}).get("accelerators") or {}).get("vulkan") or {}).get("devices") or []
    return any(d.get("type") not in ("cpu", None) for d in devices)


def default_cells(quick: bool, cores: int, profile: dict | None = None) -> list[Cell]:
    """The curated matrix: each lever on its own, so every row answers one question."""
    t = min(2, cores) if quick else min(4, cores)

    def wc(model, quant, ctx, threads=t, beam=1, variant="wheel", fallback=False):
        return Cell(EngineConfig("whispercpp", model, quant, threads, beam, ctx, "en", fallback), variant)

    def fw(model, quant, threads=t, beam=1):
        return Cell(EngineConfig("faster-whisper", model, quant, threads, beam, "full", "en"))

    if quick:
        m = models.DEFAULT_MODEL
        return [wc(m, "f16", "full"), wc(m, "f16", "fit"), wc(m, "q8_0", "fit"), fw(m, "int8")]
    cells = []
    built = [v for v in variants.installed_variants() if v != "cuda" or _has_cuda()]
    for m in available_models():
        cells += [wc(m, q, ctx) for q in ("f16", "q8_0") for ctx in ("full", "fit")]
        cells += [wc(m, "q8_0", "fit", threads=1), wc(m, "q8_0", "fit", beam=5)]
        cells += [fw(m, "int8"), fw(m, "float32"), fw(m, "int8", threads=1)]
        for v in built:
            if v == "vulkan":  # on a software device (lavapipe, ~27x slower than the CPU) only on request
                if m == models.DEFAULT_MODEL and _real_vulkan_gpu(profile):
                    cells += [wc(m, q, "fit", variant=v) for q in ("f16", "q8_0")]
                continue
            cells += [wc(m, q, "fit", variant=v) for q in ("f16", "q8_0")]
    cells.append(wc(models.DEFAULT_MODEL, "q8_0", "fit", fallback=True))
    return cells


def _has_cuda() -> bool:
    return os.path.exists("/dev/nvidiactl") or os.path.exists("/proc/driver/nvidia")


def plan(options: BenchOptions, profile: dict | None = None) -> Plan:
    all_clips = clipsmod.load_clips(options.clips_dir or default_clips_dir())
    clips = select_clips(all_clips, options.quick, options.tiers)
    if not clips:
        raise DvmError("no usable clips: the matrix needs English clips (with or without reference text)")
    cores = os.cpu_count() or 2
    explicit = any([options.engines, options.models, options.threads, options.beams, options.contexts, options.quants, options.variants])
    if explicit:
        engines = options.engines or ["whispercpp", "faster-whisper"]
        quants = options.quants or []
        cells = expand(
            engines=engines,
            models=options.models or [models.DEFAULT_MODEL],
            threads=options.threads or [min(2, cores)],
            beams=options.beams or [1],
            contexts=options.contexts or ["full", "fit"],
            whispercpp_quants=[q for q in quants if q in ("f16", "q8_0", "f32")] or ["f16", "q8_0"],
            fw_quants=[q for q in quants if q not in ("f16", "q8_0", "f32")] or ["int8"],
            variants=options.variants or ["wheel"],
        )
    else:
        cells = default_cells(options.quick, cores, profile)
    for cell in cells:
        if cell.config.engine == "whispercpp":
            variants.variant_path(cell.variant)  # fails early, with the build command, if a variant is missing
    repeats = options.repeats or (3 if options.quick else 5)
    return Plan(cells=cells, clips=clips, warmup=options.warmup, repeats=repeats)


def add_anchors(cells: list[dict], the_plan: Plan) -> None:
    """For whisper.cpp cells whose build has whisper-cli: the CLI's warm time on one clip, and dvm / CLI."""
    from dvm.harness import wcpp_tools

    speech = [c for c in the_plan.clips if c.text]
    clip = next((c for c in speech if c.id == "en-jfk"), speech[0] if speech else None)
    if clip is None:
        return
    for cell in cells:
        cfg = cell.get("config") or {}
        if "error" in cell or cfg.get("engine") != "whispercpp" or cfg.get("beam_size", 1) != 1:
            continue
        variant = cell.get("variant", "wheel")
        if wcpp_tools.tool_path(variant, "whisper-cli") is None:
            cell["anchor"] = {"skipped": f"whisper-cli for {variant} is not built (nox -s build-whispercpp -- {variant})"}
            continue
        record = next((r for r in cell["records"] if r["clip_id"] == clip.id), None)
        try:
            result = wcpp_tools.anchor(variant, models.ensure_ggml(cfg["model"], cfg["quant"]), clip.path, cfg["threads"],
                                       cfg["audio_ctx"], repeats=3, trials=2, gpu=cfg.get("device", "cpu") != "cpu")
        except DvmError as exc:
            cell["anchor"] = {"error": str(exc)}
            continue
        cell["anchor"] = {"clip": clip.id, "cli_warm_s": result["warm_s"], **wcpp_tools.anchor_ratio(record["median_s"], result)}


def concurrency_cells(winner: dict, cores: int) -> list[Cell]:
    """Workers x threads for the winning configuration: within the cores, and one step beyond."""
    config = EngineConfig.from_dict(winner["config"])
    shapes = sorted({(w, max(1, cores // w)) for w in (1, 2, 4) if w <= cores} | {(2, max(1, cores // 2) * 2)})
    cells = []
    for workers, threads in shapes:
        cfg = EngineConfig.from_dict({**config.as_dict(), "threads": threads})
        cells.append(Cell(cfg, winner.get("variant", "wheel"), workers))
    return cells


def run(options: BenchOptions, out_dir: Path, profile: dict,
        on_cell: Callable[[int, int, Cell, dict], None] | None = None,
        on_start: Callable[[int], None] | None = None) -> dict:
    """Run the matrix and write out_dir; Ctrl-C keeps finished cells (then re-raises)."""
    import tempfile

    the_plan = plan(options, profile)
    from dvm.harness.probe import platform_id as _platform_id

    platform_id = _platform_id(profile)
    cores = os.cpu_count() or 2
    total = len(the_plan.cells) + (len(concurrency_cells({"config": the_plan.cells[0].config.as_dict()}, cores)) if options.concurrency else 0)
    if on_start:
        on_start(total)
    run_data = {
        "schema": report.SCHEMA, "dvm_version": __version__, "platform_id": platform_id,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "profile": profile,
        "plan": {"quick": options.quick, "warmup": the_plan.warmup, "repeats": the_plan.repeats,
                 "clips": [c.id for c in the_plan.clips], "cells": [c.id for c in the_plan.cells]},
        "cells": [], "concurrency": [], "interrupted": False, "chosen": None,
    }
    from dvm.harness.gate import calibration

    calibrations = [calibration()]
    interrupted = False
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
                for j, cell in enumerate(concurrency_cells(choice["cell"], cores), len(the_plan.cells) + 1):
                    result = run_concurrent(cell, speech, workdir, repeats=1)
                    run_data["concurrency"].append(result)
                    if on_cell:
                        on_cell(j, total, cell, result)
        except KeyboardInterrupt:
            interrupted = True
    run_data["interrupted"] = interrupted
    if not interrupted:
        calibrations.append(calibration())
    run_data["calibration_s"] = min(calibrations)
    run_data["calibration_samples_s"] = calibrations
    choice = chooser.choose(run_data["cells"], options.wer_budget)
    if choice:
        serving = chooser.choose_serving(run_data["concurrency"])
        toml_text = chooser.render_toml(platform_id, choice, serving, str(out_dir))
        (out_dir).mkdir(parents=True, exist_ok=True)
        (out_dir / "chosen.toml").write_text(toml_text)
        if not interrupted:
            home_copy = chooser.chosen_path(platform_id)
            home_copy.parent.mkdir(parents=True, exist_ok=True)
            home_copy.write_text(toml_text)
        run_data["chosen"] = {"cell": choice["summary"]["cell"], "rule": choice["rule"], "median_rtf": choice["summary"]["median_rtf"],
                              "wer": choice["summary"]["wer"], "serving": {"workers": serving["workers"], "threads": serving["config"]["threads"]} if serving else None}
    report.write_outputs(run_data, out_dir)
    if interrupted:
        raise KeyboardInterrupt
    return run_data
