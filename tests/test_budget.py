"""The hot-path budget judge (benchmarks/budget.py) on synthetic pytest-benchmark JSON."""

from __future__ import annotations

import json

import pytest

from benchmarks import budget


def bench_run(stages: dict[str, float], calibration: float = 0.010, foreign: float | None = 0.02) -> dict:
    rows = [{"name": name, "stats": {"min": value}} for name, value in {**stages, budget.CALIBRATION: calibration}.items()]
    return {"machine_info": {"dvm_load": {"foreign_cores": foreign}}, "benchmarks": rows}


BASE = {"test_vad": 0.0020, "test_opus_decode": 0.0040}


def test_an_unchanged_run_is_within_budget():
    verdict = budget.judge(bench_run(BASE), bench_run(BASE))
    assert verdict["ok"] and verdict["judged"]
    assert all(s["normalised_ratio"] == pytest.approx(1.0) for s in verdict["stages"])


def test_a_slower_machine_is_normalised_by_the_calibration_stage():
    """Everything 40 % slower, the calibration stage too: absolute +40 %, normalised unchanged."""
    slower = bench_run({k: v * 1.4 for k, v in BASE.items()}, calibration=0.014)
    verdict = budget.judge(slower, bench_run(BASE))
    assert verdict["ok"]
    assert all(s["absolute_ratio"] == pytest.approx(1.4) for s in verdict["stages"])


def test_one_stage_slower_beyond_the_threshold_is_caught_and_named():
    current = bench_run({**BASE, "test_vad": BASE["test_vad"] * 1.3})
    verdict = budget.judge(current, bench_run(BASE), threshold=0.25)
    assert not verdict["ok"]
    assert [s["stage"] for s in verdict["stages"] if s["regressed"]] == ["test_vad"]
    assert "REGRESSION: test_vad" in budget.render(verdict)


def test_a_busy_machine_is_not_judged():
    current = bench_run({**BASE, "test_vad": BASE["test_vad"] * 2}, foreign=1.1)
    verdict = budget.judge(current, bench_run(BASE))
    assert verdict["ok"] and not verdict["judged"]
    assert "machine busy, not judged" in budget.render(verdict)


def test_cli_exit_codes(tmp_path, capsys):
    base, same, slow, busy, old = (tmp_path / f"{n}.json" for n in ("base", "same", "slow", "busy", "old"))
    base.write_text(json.dumps(bench_run(BASE)))
    same.write_text(json.dumps(bench_run(BASE)))
    slow.write_text(json.dumps(bench_run({**BASE, "test_opus_decode": 0.006})))
    busy.write_text(json.dumps(bench_run({**BASE, "test_opus_decode": 0.006}, foreign=1.0)))
    old.write_text(json.dumps({"benchmarks": [{"name": "test_vad", "stats": {"min": 0.002}}]}))
    assert budget.main([str(same), str(base)]) == 0
    assert budget.main([str(slow), str(base)]) == budget.EXIT_REGRESSION
    assert budget.main([str(busy), str(base)]) == budget.EXIT_BUSY
    capsys.readouterr()
    assert budget.main([str(same), str(old)]) == budget.EXIT_INPUT
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no test_calibration_kernel stage" in err
    assert budget.main([str(tmp_path / "missing.json"), str(base)]) == budget.EXIT_INPUT
