"""Choosing the configuration to serve with, and the chosen.toml file that carries it.

The rule (documented in the file it writes): among cells that ran without error, take the most
accurate WER seen (``best``; the decision WER of ``report.decision_wer``: the mean of the
real-speech tiers' WERs when the clips have real speech, else the mean over the scored clips); keep cells whose WER <= best + budget (default 0.02, i.e. two WER
points) and which hallucinate no more on silence than the best-hallucinating cell + 0.1 words/s;
of those, the lowest median RTF wins. For serving, the concurrency runs of the winner decide
workers x threads: the highest throughput whose p95 latency stays under ``latency_budget_s``.
"""

from __future__ import annotations

import datetime as _dt
import tomllib
from pathlib import Path

from dvm.errors import DvmError, parse_file
from dvm.harness.bench.report import summarize_cell
from dvm.harness.engines import EngineConfig
from dvm.paths import dvm_home

DEFAULT_WER_BUDGET = 0.02
DEFAULT_LATENCY_BUDGET_S = 2.0


def choose(cells: list[dict], wer_budget: float = DEFAULT_WER_BUDGET) -> dict | None:
    summaries = [(cell, summarize_cell(cell)) for cell in cells if "error" not in cell]
    scored = [(c, s) for c, s in summaries if s.get("wer") is not None and s.get("median_rtf") is not None]
    if not scored:
        return None
    best_wer = min(s["wer"] for _, s in scored)
    halluc = [s["hallucination_wps"] for _, s in scored if s.get("hallucination_wps") is not None]
    halluc_limit = (min(halluc) + 0.1) if halluc else None
    eligible = [(c, s) for c, s in scored if s["wer"] <= best_wer + wer_budget + 1e-12
                and (halluc_limit is None or (s.get("hallucination_wps") or 0.0) <= halluc_limit)]
    cell, summary = min(eligible, key=lambda cs: cs[1]["median_rtf"])
    return {
        "cell": cell,
        "summary": summary,
        "rule": (f"lowest median RTF among cells with WER <= best WER ({best_wer:.4f}) + {wer_budget} "
                 f"and silence hallucination <= best + 0.1 words/s; WER = {summary.get('wer_basis', 'mean WER over the scored clips')}"),
        "best_wer": best_wer,
        "wer_budget": wer_budget,
        "candidates": len(eligible),
        "cells": len(cells),
    }


def choose_serving(concurrency: list[dict], latency_budget_s: float = DEFAULT_LATENCY_BUDGET_S) -> dict | None:
    ok = [c for c in concurrency if "error" not in c and c.get("throughput_x_realtime")]
    if not ok:
        return None
    within = [c for c in ok if (c.get("latency_p95_s") or 1e9) <= latency_budget_s] or ok
    return max(within, key=lambda c: c["throughput_x_realtime"])


# ---------------------------------------------------------------------------- chosen.toml


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def render_toml(platform_id: str, choice: dict, serving: dict | None, run_dir: str | None) -> str:
    cell, summary = choice["cell"], choice["summary"]
    cfg = dict(cell["config"])
    lines = [
        "# Chosen by `dvm bench`; read by `dvm serve --auto-config` and `dvm transcribe --config`.",
        f"# Rule: {choice['rule']}.",
        f"platform_id = {_toml_value(platform_id)}",
        f"created = {_toml_value(_dt.datetime.now(_dt.timezone.utc).isoformat(timespec='seconds'))}",
        f"rule = {_toml_value(choice['rule'])}",
        "",
        "[engine]",
        f"variant = {_toml_value(cell.get('variant', 'wheel'))}",
    ]
    for key in ("engine", "model", "quant", "threads", "beam_size", "audio_ctx", "language", "temperature_fallback", "device"):
        lines.append(f"{key} = {_toml_value(cfg[key])}")
    lines += ["", "[serving]"]
    if serving:
        lines += [f"workers = {serving['workers']}", f"threads = {serving['config']['threads']}",
                  f"throughput_x_realtime = {serving['throughput_x_realtime']:.3f}",
                  f"latency_p95_s = {serving['latency_p95_s']:.3f}"]
    else:
        lines += ["workers = 1", f"threads = {cfg['threads']}"]
    lines += ["", "[figures]", f"cell = {_toml_value(summary['cell'])}"]
    keys = ["median_rtf", "min_rtf", "wer", "wer_all", *sorted(k for k in summary if k.startswith("wer_") and k not in ("wer_all", "wer_basis")),
            "rtf_long", "hallucination_wps", "median_s_10s", "load_s", "peak_rss_mb"]
    for key in keys:
        if isinstance(summary.get(key), (int, float)):
            lines.append(f"{key} = {summary[key]:.6g}")
    if summary.get("wer_basis"):
        lines.append(f"wer_basis = {_toml_value(summary['wer_basis'])}")
    lines += [f"best_wer = {choice['best_wer']:.6g}", f"wer_budget = {choice['wer_budget']}",
              f"candidates = {choice['candidates']}", f"cells = {choice['cells']}"]
    if run_dir:
        lines.append(f"run_dir = {_toml_value(run_dir)}")
    return "\n".join(lines) + "\n"


def chosen_path(platform_id: str) -> Path:
    return dvm_home() / "chosen" / f"{platform_id}.toml"


def read_chosen(path: Path) -> dict:
    data = parse_file(path, tomllib.loads, tomllib.TOMLDecodeError, "no such config file", "TOML")
    if "engine" not in data or "engine" not in data["engine"]:
        raise DvmError(f"{path}: no [engine] table with an engine name")
    return data


def read_config(path: Path) -> EngineConfig:
    """The engine configuration in a chosen.toml (the variant is in read_chosen(path)['engine']['variant'])."""
    return EngineConfig.from_dict(read_chosen(path)["engine"])
