"""Tables, the Pareto front, seed claims and the choice rule, on synthetic results files."""

from __future__ import annotations

import json

import pytest

from dvm.harness.bench import choose
from dvm.harness.bench import report
from dvm.errors import DvmError


def record(rtf: float, wer: float | None, clip="c1", seconds=10.0, halluc=None, reference="x"):
    walls = [rtf * seconds] * 3
    return {"clip_id": clip, "audio_seconds": seconds, "wall_seconds": walls, "median_s": walls[0], "min_s": walls[0],
            "median_rtf": rtf, "min_rtf": rtf, "spread": 0.0, "repeats": 3, "reference": reference,
            "score": {"wer": wer, "cer": wer, "hallucination_wps": halluc, "ref_words": 10,
                      "substitutions": int((wer or 0) * 10), "deletions": 0, "insertions": 0, "hyp_words": 10}}


def cell(cell_id, rtf, wer, engine="whispercpp", quant="f16", halluc=0.0):
    return {"cell_id": cell_id, "variant": "wheel", "load_seconds": 0.1, "peak_rss_mb": 100.0,
            "config": {"engine": engine, "model": "tiny.en", "quant": quant, "threads": 2, "beam_size": 1,
                       "audio_ctx": "fit", "language": "en", "temperature_fallback": False, "device": "cpu"},
            "info": {"device": "cpu", "engine_version": "x"},
            "records": [record(rtf, wer), record(rtf, None, clip="silence", halluc=halluc, reference="")]}


def run_file(cells, platform="linux-x86_64-avx512"):
    return {"schema": 1, "platform_id": platform, "cells": cells, "concurrency": []}


def test_choice_is_fastest_within_wer_budget():
    cells = [cell("accurate-slow", 0.10, 0.00), cell("close-fast", 0.03, 0.02), cell("wrong-fastest", 0.01, 0.30)]
    picked = choose.choose(cells, wer_budget=0.02)
    assert picked["summary"]["cell"] == "close-fast"
    assert picked["best_wer"] == 0.0 and picked["candidates"] == 2
    tighter = choose.choose(cells, wer_budget=0.01)
    assert tighter["summary"]["cell"] == "accurate-slow"


def test_choice_rejects_hallucinating_cells():
    cells = [cell("quiet", 0.05, 0.0, halluc=0.0), cell("chatty", 0.02, 0.0, halluc=0.5)]
    assert choose.choose(cells)["summary"]["cell"] == "quiet"


def test_choice_skips_errors_and_handles_empty():
    assert choose.choose([{"cell_id": "x", "error": "boom"}]) is None
    assert choose.choose([]) is None


def test_chosen_toml_roundtrip(tmp_path):
    cells = [cell("a", 0.05, 0.01)]
    picked = choose.choose(cells)
    serving = {"workers": 2, "config": {"threads": 1}, "throughput_x_realtime": 30.0, "latency_p95_s": 0.4}
    text = choose.render_toml("linux-x86_64-avx512", picked, serving, "results/x")
    path = tmp_path / "chosen.toml"
    path.write_text(text)
    data = choose.read_chosen(path)
    assert data["engine"]["engine"] == "whispercpp" and data["engine"]["audio_ctx"] == "fit"
    assert data["serving"] == {"workers": 2, "threads": 1, "throughput_x_realtime": 30.0, "latency_p95_s": 0.4}
    assert data["figures"]["median_rtf"] == pytest.approx(0.05)
    config = choose.read_config(path)
    assert config.engine == "whispercpp" and config.threads == 2 and config.quant == "f16"
    assert "lowest median RTF" in data["rule"]


def test_bad_chosen_files(tmp_path):
    with pytest.raises(DvmError, match="no such config"):
        choose.read_chosen(tmp_path / "absent.toml")
    (tmp_path / "bad.toml").write_text("this is = = not toml")
    with pytest.raises(DvmError, match="not valid TOML"):
        choose.read_chosen(tmp_path / "bad.toml")


def test_pareto_front():
    points = [(0.1, 0.0), (0.05, 0.05), (0.2, 0.1), (0.01, 0.3), (0.05, 0.06)]
    assert sorted(report.pareto_front(points)) == [0, 1, 3]


def test_seed_claims_match_platforms():
    assert report.claim_for("linux-x86_64-avx512", "cpu")["claimed_rtf"] == 0.2
    assert report.claim_for("linux-x86_64-avx2", "cuda")["claimed_rtf"] == 0.05
    assert report.claim_for("darwin-arm64-neon", "metal")["claimed_rtf"] == 0.03
    assert report.claim_for("linux-aarch64-neon", "cpu")["configuration"] == "CPU (NEON)"
    assert report.claim_for("linux-x86_64-avx2", "vulkan")["claim"] == "3-5x faster than CPU"


def test_outputs_and_merge(tmp_path):
    run_a = run_file([cell("a", 0.05, 0.01), cell("b", 0.02, 0.05, engine="faster-whisper", quant="int8")])
    run_b = run_file([cell("a", 0.04, 0.01)], platform="linux-aarch64-neon")
    report.write_outputs(run_a, tmp_path / "x86")
    report.write_outputs(run_b, tmp_path / "arm")
    for name in ("results.json", "table.md", "table.csv", "pareto.png"):
        assert (tmp_path / "x86" / name).stat().st_size > 0
    merged = report.find_runs([tmp_path])
    assert {r["platform_id"] for r in merged} == {"linux-x86_64-avx512", "linux-aarch64-neon"}
    md = report.markdown(merged)
    assert md.count("| linux-") == 3 and "0.200" in md  # the seed's claim stands beside the measured RTF
    csv = report.csv_text(merged)
    assert csv.splitlines()[0].startswith("platform,")
    assert len(csv.strip().splitlines()) == 4


def test_unusable_results(tmp_path):
    (tmp_path / "results.json").write_text("{not json")
    with pytest.raises(DvmError, match="not valid JSON"):
        report.load_run(tmp_path)
    (tmp_path / "results.json").write_text(json.dumps({"hello": 1}))
    with pytest.raises(DvmError, match="not a dvm results file"):
        report.load_run(tmp_path)
    with pytest.raises(DvmError, match="no results.json"):
        report.find_runs([tmp_path / "empty"]) if (tmp_path / "empty").mkdir() is None else None


def test_anchor_ratios_are_tabled():
    anchored = cell("a", 0.02, 0.0)
    anchored["anchor"] = {"clip": "en-jfk", "dvm_s": 0.236, "cli_s": 0.243, "ratio": 0.971, "overhead_pct": -2.9}
    md = report.markdown([run_file([anchored])])
    assert "dvm / whisper-cli" in md and "| 0.971 |" in md


def tiered(rtf: float, wers: dict[str, float], cell_id: str) -> dict:
    """A cell whose clips sit in tiers, each clip with 10 reference words and wer*10 substitutions."""
    base = cell(cell_id, rtf, 0.0)
    records = []
    for n, (tier, wer) in enumerate(wers.items()):
        r = record(rtf, wer, clip=f"{tier}-{n}")
        r["tier"], r["timed"] = tier, tier == "tts"
        r["wer"], r["score"]["substitutions"] = wer, round(wer * 10)
        records.append(r)
    base["records"] = records + [base["records"][1]]
    return base


def test_tier_wers_are_pooled_and_the_decision_uses_real_speech():
    c = tiered(0.02, {"tts": 0.0, "real": 0.2, "real-opus": 0.3, "noisy": 0.4, "long": 0.1}, "x")
    extra = record(0.02, 0.0, clip="real-b")
    extra["tier"], extra["timed"], extra["wer"] = "real", False, 0.0
    extra["score"]["ref_words"] = 30  # a longer clip weighs more in its tier's pooled WER
    c["records"].append(extra)
    summary = report.summarize_cell(c)
    assert summary["wer_tts"] == 0.0 and summary["wer_real"] == pytest.approx(2 / 40)
    assert summary["wer"] == pytest.approx((2 / 40 + 0.3 + 0.4 + 0.1) / 4)
    assert "real-speech tiers" in summary["wer_basis"]
    only_tts = report.summarize_cell(tiered(0.02, {"tts": 0.1}, "y"))
    assert only_tts["wer"] == pytest.approx(0.1) and "scored clips" in only_tts["wer_basis"]


def test_untimed_clips_stay_out_of_the_rtf():
    c = tiered(0.02, {"tts": 0.0, "real": 0.1}, "x")
    c["records"][1]["median_rtf"] = 0.5  # the real clip, scored from one pass
    assert report.summarize_cell(c)["median_rtf"] == pytest.approx(0.02)


def test_real_speech_changes_the_choice_that_tts_alone_would_make():
    tiny = tiered(0.02, {"tts": 0.03, "real": 0.12, "real-opus": 0.15, "noisy": 0.25}, "tiny")
    base = tiered(0.04, {"tts": 0.03, "real": 0.07, "real-opus": 0.09, "noisy": 0.16}, "base")
    picked = choose.choose([tiny, base])
    assert picked["summary"]["cell"] == "base"
    assert "real-speech tiers" in picked["rule"]
    tts_only = [tiered(0.02, {"tts": 0.03}, "tiny"), tiered(0.04, {"tts": 0.03}, "base")]
    assert choose.choose(tts_only)["summary"]["cell"] == "tiny"


def test_tables_show_a_column_per_tier(tmp_path):
    run = run_file([tiered(0.02, {"tts": 0.0, "real": 0.2, "long": 0.1}, "x")])
    text = report.markdown([run])
    header = text.splitlines()[0]
    assert "WER tts" in header and "WER real" in header and "WER long" in header
    assert header.index("WER tts") < header.index("WER real") < header.index("WER long")
    report.write_outputs(run, tmp_path)
    assert "wer_real" in (tmp_path / "table.csv").read_text().splitlines()[0]
    picked = choose.choose(run["cells"])
    data = __import__("tomllib").loads(choose.render_toml("p", picked, None, None))
    assert data["figures"]["wer_real"] == pytest.approx(0.2) and "real-speech" in data["figures"]["wer_basis"]


def test_a_gpu_cell_that_ran_on_the_cpu_says_so_and_gets_the_cpu_claim():
    """A CUDA build with no GPU answering falls back to the CPU: its row must not pass for a GPU row."""
    fallback = cell("whispercpp[cuda]/tiny.en/f16/t2/b1/ctx-fit/gpu", 0.03, 0.0)
    fallback["config"]["device"] = "gpu"
    on_gpu = cell("whispercpp[cuda]/tiny.en/q8_0/t2/b1/ctx-fit/gpu", 0.004, 0.0)
    on_gpu["config"]["device"], on_gpu["info"]["device"], on_gpu["vram_mb"] = "gpu", "cuda", 412.0
    md = report.markdown([run_file([fallback, on_gpu], platform="linux-x86_64-avx512")])
    lines = {line.split(" | ")[1]: line for line in md.splitlines() if line.startswith("| linux-")}
    assert "whispercpp[cuda]/tiny.en/f16/t2/b1/ctx-fit/gpu (ran on cpu)" in lines
    assert "whispercpp[cuda]/tiny.en/q8_0/t2/b1/ctx-fit/gpu" in lines  # ran where it asked: no remark
    assert "| 0.200 |" in lines["whispercpp[cuda]/tiny.en/f16/t2/b1/ctx-fit/gpu (ran on cpu)"]  # the seed's CPU claim
    assert "| 0.050 |" in lines["whispercpp[cuda]/tiny.en/q8_0/t2/b1/ctx-fit/gpu"]  # the seed's CUDA claim
    assert "VRAM MB" in md and lines["whispercpp[cuda]/tiny.en/q8_0/t2/b1/ctx-fit/gpu"].endswith("| 412 |")
