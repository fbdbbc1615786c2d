"""The hot-path budget judge (benchmarks/budget.py) on synthetic pytest-benchmark JSON."""

from __future__ import annotations

import json

import pytest

from benchmarks import budget

BASE = {"test_vad": 0.0020, "test_opus_decode": 0.0040, "test_rtp_parse": 0.0001, "test_feed": 0.0060}


def bench_run(stages: dict[str, float], foreign: float | None = 0.02, planted: str | None = None) -> dict:
    return {"machine_info": {"dvm_load": {"foreign_cores": foreign, "planted": planted}},
            "benchmarks": [{"name": name, "stats": {"min": value}} for name, value in stages.items()]}


def scaled(factor: float, **overrides: float) -> dict[str, float]:
    return {k: v * factor * overrides.get(k, 1.0) for k, v in BASE.items()}


def baseline() -> dict:
    return budget.combine([bench_run(scaled(f)) for f in (0.98, 1.0, 1.03)])


def test_the_baseline_is_the_median_of_its_runs_with_their_spread():
    runs = [bench_run(scaled(1.0)), bench_run(scaled(1.0, test_vad=1.2)), bench_run(scaled(1.0, test_vad=0.9))]
    base = budget.combine(runs)
    assert base["kind"] == budget.KIND and base["runs"] == 3
    assert base["stages"]["test_vad"]["min_s"] == pytest.approx(0.0020)
    assert 0.1 < base["stages"]["test_vad"]["spread"] < 0.2  # normalised by each run's own machine factor


def test_an_unchanged_run_is_within_budget():
    verdict = budget.judge(budget.combine([bench_run(scaled(1.0))]), baseline())
    assert verdict["ok"] and verdict["judged"]
    assert all(s["normalised_ratio"] == pytest.approx(1.0, abs=0.02) for s in verdict["stages"])


def test_a_slower_machine_moves_every_stage_and_cancels_out():
    """Everything 60 % slower: absolute +60 %, normalised unchanged."""
    verdict = budget.judge(budget.combine([bench_run(scaled(1.6))]), baseline())
    assert verdict["ok"] and verdict["machine_factor"] == pytest.approx(1.6, rel=0.02)
    assert all(s["absolute_ratio"] == pytest.approx(1.6, rel=0.02) for s in verdict["stages"])


def test_one_stage_twice_as_slow_is_caught_and_named():
    verdict = budget.judge(budget.combine([bench_run(scaled(1.0, test_vad=2.2))]), baseline())
    assert not verdict["ok"]
    assert [s["stage"] for s in verdict["stages"] if s["regressed"]] == ["test_vad"]
    assert "REGRESSION: test_vad" in budget.render(verdict)


def test_one_odd_process_out_of_three_does_not_fail_the_run():
    runs = [bench_run(scaled(1.0)), bench_run(scaled(1.0, test_opus_decode=2.5)), bench_run(scaled(1.01))]
    assert budget.judge(budget.combine(runs), baseline())["ok"]


def test_a_busy_machine_is_not_judged():
    verdict = budget.judge(budget.combine([bench_run(scaled(1.0, test_vad=3.0), foreign=1.1)]), baseline())
    assert verdict["ok"] and not verdict["judged"]
    assert "machine busy, not judged" in budget.render(verdict)


def test_cli(tmp_path, capsys):
    paths = {}
    for name, data in {"a": bench_run(scaled(1.0)), "b": bench_run(scaled(1.02)), "slow": bench_run(scaled(1.0, test_feed=2.5)),
                       "busy": bench_run(scaled(1.0, test_feed=2.5), foreign=1.0),
                       "old": {"benchmarks": [{"name": "test_vad", "stats": {"min": 0.002}}]}}.items():
        paths[name] = tmp_path / f"{name}.json"
        paths[name].write_text(json.dumps(data))
    base = tmp_path / "base.json"
    assert budget.main(["combine", str(base), str(paths["a"]), str(paths["b"])]) == 0
    assert budget.main(["judge", str(base), str(paths["a"])]) == 0
    assert budget.main(["judge", str(base), str(paths["slow"])]) == budget.EXIT_REGRESSION
    assert budget.main(["judge", str(base), str(paths["busy"])]) == budget.EXIT_BUSY
    capsys.readouterr()
    assert budget.main(["judge", str(paths["old"]), str(paths["a"])]) == budget.EXIT_INPUT
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a dvm perf baseline" in err
    assert budget.main(["judge", str(base), str(tmp_path / "missing.json")]) == budget.EXIT_INPUT
