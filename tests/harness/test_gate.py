"""The regression gate's comparison logic, on synthetic results files (and its CLI exit codes)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from dvm.harness.bench import gate
from dvm.errors import DvmError


def run(min_rtfs=(0.02, 0.03), wers=(0.0, 0.1), halluc=0.0, calibration=0.01, platform="linux-x86_64-avx512", foreign=0.05):
    records = [{"clip_id": f"c{i}", "min_rtf": r, "wer": w, "hallucination_wps": None} for i, (r, w) in enumerate(zip(min_rtfs, wers))]
    records.append({"clip_id": "silence", "min_rtf": 0.01, "wer": None, "hallucination_wps": halluc})
    return {"platform_id": platform, "calibration_s": calibration,
            "cells": [{"cell_id": "whispercpp[wheel]/tiny.en/f16/t2/b1/ctx-fit", "records": records,
                       "machine_load": {"foreign_cores": foreign}}]}


def test_identical_runs_pass():
    verdict = gate.compare(run(), run())
    assert verdict.ok and verdict.checked


def test_slowdown_beyond_threshold_is_caught():
    verdict = gate.compare(run(), run(min_rtfs=(0.023, 0.0345)))  # +15 %
    assert not verdict.ok
    (finding,) = verdict.regressions
    assert finding.kind == "rtf" and finding.change == pytest.approx(0.15)
    assert "REGRESSIONS" in gate.render(verdict)


def test_slowdown_within_threshold_passes():
    assert gate.compare(run(), run(min_rtfs=(0.0216, 0.0324))).ok  # +8 %


def test_slower_machine_is_normalised_by_calibration():
    """Everything 30 % slower, the calibration kernel too: not a regression."""
    assert gate.compare(run(), run(min_rtfs=(0.026, 0.039), calibration=0.013)).ok


def test_a_busy_machine_is_not_judged_on_speed_but_still_on_accuracy():
    """Another process kept a core busy during a cell: a slowdown is reported, not judged; a WER
    increase (deterministic decoding) still fails."""
    slow_busy = gate.compare(run(), run(min_rtfs=(0.03, 0.045), foreign=1.02))
    assert slow_busy.ok and not slow_busy.speed_judged and slow_busy.foreign_cores == pytest.approx(1.02)
    assert "speed: not judged: machine busy" in gate.render(slow_busy)
    worse_busy = gate.compare(run(), run(wers=(0.0, 0.2), foreign=1.02))
    assert [f.kind for f in worse_busy.regressions] == ["wer"]
    assert not gate.compare(run(), run(min_rtfs=(0.03, 0.045), foreign=0.2)).ok  # light noise: judged


def _on(data: dict, vendor: str, brand: str, cores: int = 2, amx: bool = False) -> dict:
    data["profile"] = {"cpu": {"vendor": vendor, "brand": brand, "logical_cores": cores,
                               "flags": {"avx2": True, "avx512f": True, "amx_int8": amx}}}
    return data


def test_a_baseline_from_another_cpu_model_judges_accuracy_only():
    """One platform id, two CPUs: the baseline's AVX-512 AMD EPYC and an AVX-512 Intel Xeon. The Xeon ran the
    calibration kernel faster but whisper.cpp slower (measured: calibration ratio 0.68, RTF +25 % raw), so the
    normalised RTF read +85 %: speed is not judged across CPU models; accuracy still is."""
    baseline = _on(run(), "AuthenticAMD", "AMD EPYC")
    slower = _on(run(min_rtfs=(0.025, 0.0375), calibration=0.0068), "GenuineIntel", "Intel(R) Xeon(R) Processor")
    verdict = gate.compare(baseline, slower)
    assert verdict.ok and not verdict.speed_judged
    assert "another CPU (AMD EPYC, 2 cores; this run: Intel(R) Xeon(R) Processor, 2 cores)" in gate.render(verdict)
    worse = _on(run(wers=(0.0, 0.2), calibration=0.0068), "GenuineIntel", "Intel(R) Xeon(R) Processor")
    assert [f.kind for f in gate.compare(baseline, worse).regressions] == ["wer"]
    same = _on(run(min_rtfs=(0.025, 0.0375)), "AuthenticAMD", "AMD EPYC")
    assert not gate.compare(baseline, same).ok  # the same CPU model: +25 % is judged
    assert not gate.compare(baseline, _on(run(min_rtfs=(0.025, 0.0375)), "AuthenticAMD", "AMD EPYC", cores=4)).speed_judged
    xeon = _on(run(), "GenuineIntel", "Intel(R) Xeon(R) Processor")  # a vague model name: the SIMD features tell generations apart
    assert not gate.compare(xeon, _on(run(), "GenuineIntel", "Intel(R) Xeon(R) Processor", amx=True)).speed_judged
    assert gate.compare(xeon, _on(run(), "GenuineIntel", "Intel(R) Xeon(R) Processor")).speed_judged


def test_wer_increase_is_caught_per_clip():
    verdict = gate.compare(run(), run(wers=(0.0, 0.12)))
    assert [f.kind for f in verdict.regressions] == ["wer"] and verdict.regressions[0].clip == "c1"


def test_new_hallucination_is_caught():
    verdict = gate.compare(run(), run(halluc=0.2))
    assert [f.kind for f in verdict.regressions] == ["hallucination"]


@pytest.mark.parametrize("mutate, message", [
    (lambda r: r.update(platform_id="linux-aarch64-neon"), "not comparable"),
    (lambda r: r["cells"].clear(), "lacks 1 baseline cell"),
    (lambda r: r["cells"][0]["records"].pop(0), "lacks clip c0"),
    (lambda r: r["cells"][0].update(error="boom"), "failed cell"),
])
def test_unusable_input(mutate, message):
    current = run()
    mutate(current)
    with pytest.raises(DvmError, match=message):
        gate.compare(run(), current)


def test_calibration_kernel_is_stable_enough():
    values = [gate.calibration(samples=1) for _ in range(3)]
    assert all(v > 0 for v in values)
    assert max(values) / min(values) < 2.0


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "dvm.cli", "gate", *args], capture_output=True, text=True, timeout=120)


def test_cli_exit_codes(tmp_path):
    base, same, slow = tmp_path / "base", tmp_path / "same", tmp_path / "slow"
    for path, data in ((base, run()), (same, run()), (slow, run(min_rtfs=(0.03, 0.045)))):
        path.mkdir()
        (path / "results.json").write_text(json.dumps(data))
    assert _cli("--baseline", str(base), str(same)).returncode == 0
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "results.json").write_text(json.dumps(run(min_rtfs=(0.03, 0.045), foreign=1.1)))
    result = _cli("--baseline", str(base), str(tmp_path / "busy"))
    assert result.returncode == 3 and "speed: not judged: machine busy" in result.stdout
    result = _cli("--baseline", str(base), str(slow))
    assert result.returncode == 1 and "REGRESSIONS" in result.stdout
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "results.json").write_text("{")
    result = _cli("--baseline", str(base), str(tmp_path / "bad"))
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    new_base = tmp_path / "new" / "baseline.json"
    assert _cli("--baseline", str(new_base), str(slow), "--update-baseline").returncode == 0
    assert json.loads(new_base.read_text())["cells"][0]["records"][0]["min_rtf"] == 0.03
