"""Tables and the plot: one row per (platform, cell), from one run or merged from many machines.

A run directory holds ``results.json`` (the contract in DESIGN.md); ``table.md``, ``table.csv``
and ``pareto.png`` are derived from it and can be regenerated with ``dvm report``.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

from dvm.errors import DvmError, parse_file
from dvm.harness import scoring
from dvm.harness.clips import REAL_TIERS, TIER_OF_KIND, TIER_ORDER

SCHEMA = 1

# The seed document's claims for a 10 s clip (claimed RTF), by platform family and configuration.
SEED_CLAIMS = [
    {"platform": "Windows/Linux AMD64", "configuration": "NVIDIA GPU (CUDA)", "claimed_rtf": 0.05, "match": ("x86_64", "cuda")},
    {"platform": "Windows AMD64", "configuration": "CPU (OpenBLAS)", "claimed_rtf": 0.2, "match": ("x86_64", "cpu")},
    {"platform": "macOS ARM64", "configuration": "Docker (CPU/NEON)", "claimed_rtf": 0.2, "match": ("docker-arm64", "cpu")},
    {"platform": "macOS ARM64", "configuration": "Native (Metal)", "claimed_rtf": 0.03, "match": ("darwin-arm64", "metal")},
    {"platform": "Linux ARM64", "configuration": "CPU (NEON)", "claimed_rtf": 0.2, "match": ("aarch64", "cpu")},
    {"platform": "Intel GPU", "configuration": "Vulkan", "claimed_rtf": None, "claim": "3-5x faster than CPU", "match": ("any", "vulkan")},
]


def claim_for(platform_id: str, device: str) -> dict | None:
    """The seed row that speaks for this platform and device, if any."""
    device = (device or "cpu").lower()
    for row in SEED_CLAIMS:
        arch, dev = row["match"]
        if dev != device and not (dev == "cpu" and device == "cpu"):
            continue
        if arch == "any" or arch in platform_id or (arch == "aarch64" and "arm64" in platform_id and "darwin" not in platform_id):
            return row
    return None


# ---------------------------------------------------------------------------- loading


def load_run(directory: str | Path) -> dict:
    directory = Path(directory)
    path = directory / "results.json" if directory.is_dir() else directory
    data = parse_file(path, json.loads, json.JSONDecodeError, "no results.json here", "JSON")
    if not isinstance(data, dict) or "cells" not in data or "platform_id" not in data:
        raise DvmError(f"{path}: not a dvm results file (no platform_id/cells)")
    data["_path"] = str(path)
    return data


def find_runs(paths: list[str | Path]) -> list[dict]:
    """Each path may be a run directory, a results.json, or a folder of run directories."""
    runs = []
    for p in map(Path, paths):
        if p.is_file() or (p / "results.json").exists():
            runs.append(load_run(p))
        elif p.is_dir():
            found = sorted(p.rglob("results.json"))
            if not found:
                raise DvmError(f"{p}: no results.json found below it")
            runs.extend(load_run(f) for f in found)
        else:
            raise DvmError(f"{p}: no such file or directory")
    return runs


# ---------------------------------------------------------------------------- summarising


def tier_wers(records: list[dict]) -> dict[str, float]:
    """Pooled WER (all edits over all reference words) per tier, over the scored speech clips, in TIER_ORDER."""
    by_tier: dict[str, list[dict]] = {}
    for r in records:
        score = r.get("score") or {}
        if score.get("wer") is None or not score.get("ref_words"):
            continue
        by_tier.setdefault(r.get("tier") or TIER_OF_KIND.get(r.get("clip_kind") or "", r.get("clip_kind") or "speech"), []).append(score)
    out = {tier: scoring.aggregate(scores)["pooled_wer"] for tier, scores in by_tier.items()}
    return {tier: out[tier] for tier in sorted(out, key=_tier_rank)}


def _tier_rank(tier: str) -> tuple[int, str]:
    return (TIER_ORDER.index(tier) if tier in TIER_ORDER else len(TIER_ORDER), tier)


def decision_wer(wer_by_tier: dict[str, float], mean_wer: float | None) -> tuple[float | None, str]:
    """The WER a choice is made on: the mean of the real-speech tiers' WERs when any is present
    (each tier one vote: clean, through Opus with loss, in noise, long-form), else the mean over
    every scored clip."""
    real = [wer_by_tier[t] for t in REAL_TIERS if wer_by_tier.get(t) is not None]
    if real:
        return statistics.fmean(real), "mean of the real-speech tiers' WER (" + ", ".join(t for t in REAL_TIERS if t in wer_by_tier) + ")"
    return mean_wer, "mean WER over the scored clips"


def summarize_cell(cell: dict) -> dict:
    """One cell's figures over its clips: median RTF over the timed clips, WER per tier and the
    decision WER (see decision_wer), hallucinations on the expected-silence clips."""
    cfg = cell.get("config", {})
    row = {
        "cell": cell.get("cell_id"), "engine": cfg.get("engine"), "variant": cell.get("variant"),
        "model": cfg.get("model"), "quant": cfg.get("quant"), "threads": cfg.get("threads"),
        "beam": cfg.get("beam_size"), "audio_ctx": cfg.get("audio_ctx"), "device": (cell.get("info") or {}).get("device", cfg.get("device")),
        "requested_device": cfg.get("device"),
    }
    if "error" in cell:
        row["error"] = cell["error"]
        return row
    records = cell["records"]
    timed = [r for r in records if r.get("timed", True) and r.get("reference") is not None]
    rtfs = [r["median_rtf"] for r in timed] or [r["median_rtf"] for r in records]
    summary = scoring.aggregate([r.get("score") or {"wer": r.get("wer"), "cer": r.get("cer"), "hallucination_wps": r.get("hallucination_wps")} for r in records])
    ten_s = [r for r in timed if 5 <= r["audio_seconds"] <= 15]
    by_tier = tier_wers(records)
    wer, basis = decision_wer(by_tier, summary["mean_wer"])
    long_form = [r["median_rtf"] for r in records if r["audio_seconds"] > 30]
    row.update({
        "median_rtf": statistics.median(rtfs),
        "min_rtf": min(r["min_rtf"] for r in (timed or records)),
        "median_s_10s": statistics.median([r["median_s"] / r["audio_seconds"] * 10 for r in ten_s]) if ten_s else None,
        "spread": statistics.median([r["spread"] for r in (timed or records)]),
        "wer": wer, "wer_basis": basis, "wer_all": summary["mean_wer"], "median_wer": summary["median_wer"],
        **{f"wer_{tier}": value for tier, value in by_tier.items()},
        "rtf_long": statistics.median(long_form) if long_form else None,
        "hallucination_wps": summary["max_hallucination_wps"],
        "load_s": cell.get("load_seconds"), "peak_rss_mb": cell.get("peak_rss_mb"), "vram_mb": cell.get("vram_mb"),
        "clips": len(records), "repeats": max((r["repeats"] for r in records), default=None),
        "foreign_cores": (cell.get("machine_load") or {}).get("foreign_cores"),
        "engine_version": (cell.get("info") or {}).get("engine_version"),
    })
    return row


def rows(runs: list[dict]) -> list[dict]:
    out = []
    for run in runs:
        for cell in run["cells"]:
            row = {"platform": run["platform_id"], **summarize_cell(cell)}
            claim = claim_for(run["platform_id"], row.get("device") or "cpu")
            row["claimed_rtf"] = claim["claimed_rtf"] if claim else None
            out.append(row)
    return out


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of points not dominated in (rtf, wer), both lower-is-better."""
    front = []
    for i, (r, w) in enumerate(points):
        if any((r2 <= r and w2 <= w) and (r2 < r or w2 < w) for j, (r2, w2) in enumerate(points) if j != i):
            continue
        front.append(i)
    return front


# ---------------------------------------------------------------------------- output


_COLUMNS = ["platform", "cell", "median_rtf", "claimed_rtf", "min_rtf", "spread", "wer", "hallucination_wps",
            "median_s_10s", "load_s", "peak_rss_mb"]


def frame(runs: list[dict]):
    import pandas as pd  # noqa: PLC0415 - optional: only for tables and plots

    table = pd.DataFrame(rows(runs))
    if table.empty:
        return table
    sort_key = [c for c in ("platform", "median_rtf") if c in table.columns]
    return table.sort_values(sort_key, na_position="last").reset_index(drop=True)


def _fell_back(requested, ran) -> bool:
    """A cell asked for a GPU and ran on the CPU (a GPU build's fallback when no GPU answered)."""
    return isinstance(requested, str) and requested != "cpu" and ran == "cpu"


def label(row) -> str:
    """The configuration as the tables show it: a GPU cell that ran on the CPU says so, since its cell id names the GPU."""
    fallback = _fell_back(row.get("requested_device"), row.get("device"))
    return f"{row.get('cell')} (ran on cpu)" if fallback else str(row.get("cell"))


def _table_cell(row, column: str) -> str:
    if column == "platform":
        return str(row.get(column))
    if column == "cell":
        return label(row)
    return _fmt(row.get(column), 2 if column in ("spread", "load_s") else 0 if column in ("peak_rss_mb", "vram_mb") else 3)


def _fmt(value, digits=3):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def tier_columns(table) -> list[str]:
    """The ``wer_<tier>`` columns present, in TIER_ORDER."""
    tiers = [c[4:] for c in table.columns if c.startswith("wer_") and c not in ("wer_all", "wer_basis")]
    return [f"wer_{t}" for t in sorted(tiers, key=_tier_rank)]


def markdown(runs: list[dict]) -> str:
    table = frame(runs)
    tiers = tier_columns(table) if not table.empty else []
    columns = _COLUMNS[:6] + ["wer"] + tiers + _COLUMNS[7:]
    if not table.empty and "rtf_long" in table.columns and table["rtf_long"].notna().any():
        columns.insert(columns.index("hallucination_wps"), "rtf_long")
    if not table.empty and "vram_mb" in table.columns and table["vram_mb"].notna().any():
        columns.append("vram_mb")
    names = {"platform": "platform", "cell": "configuration", "median_rtf": "median RTF", "claimed_rtf": "seed's claimed RTF",
             "min_rtf": "min RTF", "spread": "spread", "wer": "WER", "hallucination_wps": "halluc. w/s", "rtf_long": "RTF long-form",
             "median_s_10s": "s per 10 s clip", "load_s": "load s", "peak_rss_mb": "peak RSS MB", "vram_mb": "VRAM MB"}
    lines = ["| " + " | ".join(names.get(c, f"WER {c[4:]}") for c in columns) + " |", "|" + "---|" * len(columns)]
    for _, r in table.iterrows():
        if isinstance(r.get("error"), str):
            lines.append(f"| {r['platform']} | {r['cell']} | error: {r['error']} |" + " |" * (len(columns) - 3))
            continue
        lines.append("| " + " | ".join(_table_cell(r, c) for c in columns) + " |")
    lines.append("")
    basis = next((r.get("wer_basis") for _, r in table.iterrows() if isinstance(r.get("wer_basis"), str)), None) if not table.empty else None
    lines.append("RTF = processing seconds / audio seconds (median over the timed clips of each clip's median of repeats). "
                 f"WER = {basis or 'mean WER over the scored clips'}; WER <tier> = pooled WER of that tier's clips "
                 "(all edits / all reference words), Whisper-normalised. Claimed RTF: the seed document's figure for this platform.")
    anchored = [(run["platform_id"], c) for run in runs for c in run["cells"] if (c.get("anchor") or {}).get("ratio")]
    if anchored:
        lines += ["", "| platform | configuration | clip | dvm s | whisper-cli s | dvm / whisper-cli |", "|---|---|---|---|---|---|"]
        for platform, c in anchored:
            a = c["anchor"]
            lines.append(f"| {platform} | {c['cell_id']} | {a['clip']} | {a['dvm_s']:.3f} | {a['cli_s']:.3f} | {a['ratio']:.3f} |")
    conc = [c for run in runs for c in run.get("concurrency", []) if "error" not in c]
    if conc:
        lines += ["", "| platform | configuration | workers × threads | throughput (× real time) | latency p50 s | latency p95 s |", "|---|---|---|---|---|---|"]
        for run in runs:
            # serving runs report no device of their own: one of a variant whose cells fell back to the CPU did too
            fell_back = {c.get("variant") for c in run["cells"]
                         if _fell_back((c.get("config") or {}).get("device"), (c.get("info") or {}).get("device"))}
            for c in run.get("concurrency", []):
                if "error" in c:
                    continue
                name = c["cell_id"] + (" (ran on cpu)" if c.get("variant") in fell_back and c["config"].get("device", "cpu") != "cpu" else "")
                lines.append(f"| {run['platform_id']} | {name} | {c['workers']} × {c['config']['threads']} | "
                             f"{_fmt(c['throughput_x_realtime'], 1)} | {_fmt(c['latency_p50_s'])} | {_fmt(c['latency_p95_s'])} |")
    return "\n".join(lines) + "\n"


def csv_text(runs: list[dict]) -> str:
    return frame(runs).to_csv(index=False)


def plot(runs: list[dict], path: Path) -> Path | None:
    import matplotlib  # noqa: PLC0415 - optional: only for tables and plots

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415 - optional: only for tables and plots

    data = [r for r in rows(runs) if r.get("median_rtf") is not None and r.get("wer") is not None]
    if not data:
        return None
    points = [(r["median_rtf"], r["wer"]) for r in data]
    front = set(pareto_front(points))
    fig, ax = plt.subplots(figsize=(9, 6), dpi=110)
    engines = sorted({f"{r['engine']}[{r['variant']}]" if r["engine"] == "whispercpp" else r["engine"] for r in data})
    markers = dict(zip(engines, "osD^vP*X"))
    for r, (x, y) in zip(data, points):
        key = f"{r['engine']}[{r['variant']}]" if r["engine"] == "whispercpp" else r["engine"]
        ax.scatter(x, y, marker=markers.get(key, "o"), s=40, alpha=0.45 if data.index(r) not in front else 1.0,
                   color="tab:red" if data.index(r) in front else "tab:blue", label=key)
    ordered = sorted(front, key=lambda i: points[i][0])
    ax.plot([points[i][0] for i in ordered], [points[i][1] for i in ordered], "r--", lw=1, label="Pareto front")
    for i in ordered:
        ax.annotate(data[i]["cell"], points[i], fontsize=6, xytext=(4, 4), textcoords="offset points")
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    ax.legend(unique.values(), unique.keys(), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("median RTF (log scale, lower is faster)")
    ax.set_ylabel("WER (lower is more accurate)")
    ax.set_title(f"RTF × WER — {', '.join(sorted({r['platform'] for r in data}))}")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def write_outputs(run: dict, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    clean = {k: v for k, v in run.items() if not k.startswith("_")}
    (directory / "results.json").write_text(json.dumps(clean, indent=1, default=str))
    (directory / "table.md").write_text(markdown([run]))
    (directory / "table.csv").write_text(csv_text([run]))
    plot([run], directory / "pareto.png")


def render_terminal(runs: list[dict], console) -> None:
    from rich.table import Table  # noqa: PLC0415 - rich only when rendering

    data = rows(runs)
    tiers = sorted({k[4:] for r in data for k in r if k.startswith("wer_") and k not in ("wer_all", "wer_basis")}, key=_tier_rank)
    table = Table(title="RTF × WER", show_lines=False)
    headers = ["platform", "configuration", "median RTF", "claimed", "WER", *tiers, "halluc.", "load s", "RSS MB"]
    for column in headers:
        table.add_column(column, justify="right" if column not in ("platform", "configuration") else "left")
    for r in data:
        if r.get("error"):
            table.add_row(r["platform"], r["cell"], f"[red]{r['error']}[/red]", *[""] * (len(headers) - 3))
            continue
        table.add_row(r["platform"], label(r), _fmt(r["median_rtf"]), _fmt(r["claimed_rtf"], 2), _fmt(r["wer"]),
                      *[_fmt(r.get(f"wer_{t}")) for t in tiers], _fmt(r["hallucination_wps"], 2), _fmt(r["load_s"], 2),
                      _fmt(r["peak_rss_mb"], 0))
    console.print(table)
