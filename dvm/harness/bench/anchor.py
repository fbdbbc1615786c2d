"""The *anchor*: the same clip, model, threads and settings as a dvm cell through whisper.cpp's own
``whisper-cli`` (built by variants/tools.py), so a report can show dvm / whisper-cli.

    python -m dvm.harness.bench.anchor build wheel [native ...]      # -> <variants dir>/<variant>/bin/
    python -m dvm.harness.bench.anchor list
    python -m dvm.harness.bench.anchor anchor --variant wheel --model tiny.en --clip fixtures/audio/en-jfk.wav --dvm

How the anchor measures warm runs: whisper-cli loads the model once and can take several ``-f``
files; its timing counters add up over them. One process with 1 file and one with 1 + R files
differ by exactly R warm transcriptions, so (total(1 + R) - total(1)) / R is whisper-cli's warm
time per run (model load and the cold first run cancel out). Each is the quietest of a few trials
(other processes only ever add time); a result whose warm figure strays far from the mean of all
runs is flagged ``noisy``. dvm's cells report warm runs too.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path
from types import SimpleNamespace

from dvm.errors import DvmError, report
from dvm.harness import models
from dvm.harness.bench.cellrun import run_cell
from dvm.harness.bench.load import LoadMonitor
from dvm.harness.bench.plan import Cell
from dvm.harness.engines import EngineConfig
from dvm.harness.engines.base import resolve_audio_ctx
from dvm.harness.procout import last_line
from dvm.harness.variants.registry import FLAGS, WHEEL
from dvm.harness.variants.tools import build_tools, find_tool, installed_tools, tool_path
from dvm.harness.wcpp_text import timings_ms

# ---------------------------------------------------------------------------- parsing their output

_FALLBACKS = re.compile(r"whisper_print_timings:\s+fallbacks =\s+(\d+) p /\s+(\d+) h")
_SEGMENT = re.compile(r"^\[(\d\d:\d\d:\d\d\.\d+) --> (\d\d:\d\d:\d\d\.\d+)\]\s?(.*)$")
_SYSINFO = re.compile(r"system_info: n_threads = (\d+) / (\d+) \| (.*)")
PHASES = ("mel", "sample", "encode", "decode", "batchd", "prompt")


def parse_timings(text: str) -> dict:
    """whisper.cpp's ``whisper_print_timings`` block -> {load_ms, mel_ms, encode_ms, ..., total_ms, <phase>_runs}."""
    out: dict = {}
    for name, ms, runs in timings_ms(text):
        out[f"{name}_ms"] = ms
        if runs:
            out[f"{name}_runs"] = runs
    fallbacks = _FALLBACKS.search(text)
    if fallbacks:
        out["fallbacks"] = int(fallbacks.group(1)) + int(fallbacks.group(2))
    if "total_ms" in out:
        out["work_ms"] = out["total_ms"] - out.get("load_ms", 0.0)
        out["compute_ms"] = sum(out.get(f"{p}_ms", 0.0) for p in PHASES)
    info = _SYSINFO.search(text)
    if info:
        out["threads"], out["system_info"] = int(info.group(1)), info.group(3).strip()
    return out


def parse_transcript(stdout: str) -> str:
    """The text of whisper-cli's ``[t0 --> t1]  text`` lines (or plain lines with -nt), joined."""
    texts = []
    for line in stdout.splitlines():
        match = _SEGMENT.match(line.strip())
        text = match.group(3) if match else line
        if text.strip():
            texts.append(text.strip())
    return " ".join(" ".join(texts).split())


def parse_bench(text: str) -> dict:
    """whisper-bench's figures: per-run encoder/decoder ms (it encodes a full 30 s window)."""
    timings = parse_timings(text)
    out = {k: v for k, v in timings.items() if k in ("load_ms", "total_ms", "threads", "system_info")}
    for phase in ("encode", "decode", "batchd", "prompt"):
        if f"{phase}_ms" in timings:
            runs = timings.get(f"{phase}_runs", 1) or 1
            out[f"{phase}_ms_per_run"] = timings[f"{phase}_ms"] / runs
            out[f"{phase}_runs"] = runs
    return out


# ---------------------------------------------------------------------------- running them


def _clip_seconds(clip_path: Path) -> float:
    with wave.open(str(clip_path), "rb") as wav:
        return wav.getnframes() / wav.getframerate()


def cli_command(binary: Path, model_path: Path, clip_path: Path, threads: int, audio_ctx: int, files: int = 1,
                beam_size: int = 1, language: str = "en", fallback: bool = False, gpu: bool = False) -> list[str]:
    """whisper-cli doing what a dvm whispercpp cell does (greedy unless beam > 1, no fallback unless asked)."""
    command = [str(binary), "-m", str(model_path), "-t", str(threads), "-ac", str(audio_ctx), "-bs", str(beam_size),
               "-l", language or "en"]
    if not fallback:
        command.append("-nf")
    if not gpu:
        command.append("-ng")
    for _ in range(files):
        command += ["-f", str(clip_path)]
    return command


def _run(command: list[str], env: dict | None, timeout: float) -> tuple[str, str, float]:
    started = time.perf_counter()
    try:
        result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise DvmError(f"{Path(command[0]).name} took longer than {timeout:g} s") from None
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise DvmError(f"{Path(command[0]).name} failed: {last_line(result.stderr, f'exit code {result.returncode}')}")
    return result.stdout, result.stderr, wall


def anchor(variant: str, model_path: Path, clip_path: Path, threads: int, audio_ctx: int | str = 0, repeats: int = 5,
           trials: int = 3, beam_size: int = 1, language: str = "en", fallback: bool = False, gpu: bool = False,
           env: dict | None = None, timeout: float = 600) -> dict:
    """whisper-cli's own figures for one clip: warm seconds per run (see the module text), cold, phases, text.

    ``audio_ctx`` is encoder frames (0 = full window) or a dvm policy ("full", "fit").
    ``trials`` pairs of processes (1 file, 1 + ``repeats`` files); medians over the pairs.
    """
    binary = tool_path(variant, "whisper-cli") or find_tool("whisper-cli", variant)
    if binary is None:
        raise DvmError(f"whisper-cli for {variant} is not built; run `python -m dvm.harness.bench.anchor build {variant}`")
    clip_path, model_path = Path(clip_path), Path(model_path)
    seconds = _clip_seconds(clip_path)
    ctx = resolve_audio_ctx(str(audio_ctx), seconds)
    common = {"beam_size": beam_size, "language": language, "fallback": fallback, "gpu": gpu}
    single, multi, text = [], [], ""
    _run(cli_command(binary, model_path, clip_path, threads, ctx, 1, **common), env, timeout)  # page cache, CPU clocks
    monitor = _load_monitor()
    for _ in range(max(1, trials)):
        out, err, wall = _run(cli_command(binary, model_path, clip_path, threads, ctx, 1, **common), env, timeout)
        single.append({**parse_timings(err), "process_s": wall})
        text = parse_transcript(out)
        _, err, wall = _run(cli_command(binary, model_path, clip_path, threads, ctx, 1 + repeats, **common), env, timeout)
        multi.append({**parse_timings(err), "process_s": wall})
    if "total_ms" not in single[0] or "total_ms" not in multi[0]:
        raise DvmError("whisper-cli printed no timings (built without them, or the output format changed)")

    load = monitor.stop() if monitor else {}

    def low(rows, key):  # other processes only ever add time: the quietest trial is the truest
        return min(r.get(key, 0.0) for r in rows)

    warm = (low(multi, "total_ms") - low(single, "total_ms")) / repeats / 1000
    mean = low(multi, "work_ms") / (1 + repeats) / 1000  # every run in one process, the cold first one included
    phases = {f"{p}_s": max(0.0, (low(multi, f"{p}_ms") - low(single, f"{p}_ms")) / repeats / 1000) for p in PHASES}
    return {
        "tool": "whisper-cli", "variant": variant, "binary": str(binary), "model_file": str(model_path),
        "clip": str(clip_path), "audio_seconds": seconds, "threads": threads, "audio_ctx_frames": ctx,
        "beam_size": beam_size, "repeats": repeats, "trials": len(single),
        "warm_s": warm, "warm_rtf": warm / seconds, "mean_s": mean, "warm_phases": phases,
        # a warm run far below the mean of all runs means the trials were disturbed: measure again on a quiet machine
        "noisy": not (0.5 * mean <= warm <= 1.5 * mean),
        "trials_total_ms": {"single": [r["total_ms"] for r in single], "multi": [r["total_ms"] for r in multi]},
        "cold_work_s": low(single, "work_ms") / 1000, "cold_process_s": low(single, "process_s"),
        "load_s": low(single, "load_ms") / 1000, "fallbacks": max(r.get("fallbacks", 0) for r in multi),
        "foreign_cores": load.get("foreign_cores"),
        "system_info": single[0].get("system_info"), "text": text,
    }


def _load_monitor():
    """How busy the machine was with other work meanwhile (Linux only; None elsewhere)."""
    try:
        monitor = LoadMonitor()
        monitor.start()
        return monitor
    except (OSError, AttributeError):
        return None


def bench(variant: str, model_path: Path, threads: int, gpu: bool = False, env: dict | None = None, timeout: float = 600) -> dict:
    """whisper-bench's figures for the model (a full 30 s encoder window, 256 decoded tokens)."""
    binary = tool_path(variant, "whisper-bench") or find_tool("whisper-bench", variant)
    if binary is None:
        raise DvmError(f"whisper-bench for {variant} is not built; run `python -m dvm.harness.bench.anchor build {variant}`")
    command = [str(binary), "-m", str(model_path), "-t", str(threads)] + ([] if gpu else ["-ng"])
    _, err, wall = _run(command, env, timeout)
    figures = parse_bench(err)
    if "encode_ms_per_run" not in figures:
        raise DvmError("whisper-bench printed no encoder timing")
    return {"tool": "whisper-bench", "variant": variant, "binary": str(binary), "model_file": str(model_path),
            "process_s": wall, **figures}


def anchor_ratio(dvm_seconds: float, anchor_result: dict) -> dict:
    """dvm's warm seconds per run (a cell's median) against whisper-cli's for the same work.

    ratio 1.03 means dvm's path costs 3% more than the native CLI.
    """
    cli = anchor_result["warm_s"]
    ratio = dvm_seconds / cli if cli > 0 else float("nan")
    out = {"dvm_s": dvm_seconds, "cli_s": cli, "ratio": ratio, "overhead_pct": (ratio - 1) * 100}
    if anchor_result.get("mean_s"):
        out["ratio_vs_mean"] = dvm_seconds / anchor_result["mean_s"]  # against all runs, the cold first one included
    if anchor_result.get("noisy"):
        out["noisy"] = True
    return out


# ---------------------------------------------------------------------------- side by side


def compare(variant: str, model: str, clip_path: Path, threads: int = 2, audio_ctx: str = "full", quant: str = "f16",
            repeats: int = 5, rounds: int = 2) -> dict:
    """dvm's cell (fresh subprocess, the matrix runner) and whisper-cli's anchor, alternated ``rounds`` times.

    Best-of-rounds on each side: on a shared machine the quietest round is the fairest one.
    """
    model_path = models.ensure_ggml(model, quant)
    clip = SimpleNamespace(id=Path(clip_path).stem, path=Path(clip_path), language="en", text=None, kind="anchor")
    cell = Cell(EngineConfig("whispercpp", model, quant, threads, 1, audio_ctx, "en"), variant)
    dvm_runs, cli_runs = [], []
    with tempfile.TemporaryDirectory(prefix="dvm-anchor-") as tmp:
        for _ in range(rounds):
            result = run_cell(cell, [clip], 1, repeats, Path(tmp))
            if "error" in result:
                raise DvmError(f"dvm cell failed: {result['error']}")
            dvm_runs.append(result)
            cli_runs.append(anchor(variant, model_path, clip_path, threads, audio_ctx, repeats=repeats))
    best_dvm = min(dvm_runs, key=lambda r: r["records"][0]["median_s"])
    best_cli = min(cli_runs, key=lambda r: (r["noisy"], r["mean_s"]))
    record = best_dvm["records"][0]
    return {
        "cell": cell.id, "model": model, "variant": variant, "clip": str(clip_path),
        "dvm": {"median_s": record["median_s"], "min_s": record["min_s"], "timings": record["timings"],
                "text": record["text"], "rounds_median_s": [r["records"][0]["median_s"] for r in dvm_runs]},
        "cli": best_cli | {"rounds_warm_s": [r["warm_s"] for r in cli_runs], "rounds_mean_s": [r["mean_s"] for r in cli_runs]},
        "same_text": " ".join(record["text"].split()) == best_cli["text"],
        **anchor_ratio(record["median_s"], best_cli),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dvm.harness.bench.anchor", description="whisper.cpp's own tools beside dvm.")
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="build whisper-cli, whisper-bench, whisper-server for variants")
    b.add_argument("names", nargs="+", choices=[WHEEL, *sorted(FLAGS)])
    b.add_argument("--jobs", type=int)
    sub.add_parser("list", help="list built tools")
    a = sub.add_parser("anchor", help="whisper-cli's figures for a clip (and dvm's beside them with --dvm)")
    a.add_argument("--variant", default=WHEEL)
    a.add_argument("--model", default="tiny.en")
    a.add_argument("--quant", default="f16")
    a.add_argument("--clip", required=True, type=Path)
    a.add_argument("--threads", type=int, default=2)
    a.add_argument("--audio-ctx", default="full")
    a.add_argument("--repeats", type=int, default=5)
    a.add_argument("--rounds", type=int, default=2)
    a.add_argument("--dvm", action="store_true", help="also run dvm's cell and report the ratio dvm / whisper-cli")
    a.add_argument("--bench", action="store_true", help="also run whisper-bench")
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            for name in args.names:
                build_tools(name, args.jobs)
        elif args.command == "list":
            print(json.dumps(installed_tools(), indent=2))
        else:
            if args.dvm:
                out = compare(args.variant, args.model, args.clip, args.threads, args.audio_ctx, args.quant, args.repeats, args.rounds)
            else:
                model_path = models.ensure_ggml(args.model, args.quant)
                out = anchor(args.variant, model_path, args.clip, args.threads, args.audio_ctx, repeats=args.repeats)
            if args.bench:
                out["whisper_bench"] = bench(args.variant, models.ensure_ggml(args.model, args.quant), args.threads)
            print(json.dumps(out, indent=2))
    except DvmError as exc:
        return report(exc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
