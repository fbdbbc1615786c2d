"""The GPU bundle: parts cut, carried call by call, checked and unpacked; the carry plan; staging
through the real command line; the returned files collected into results/."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from dvm.errors import DvmError
from dvm.harness.gpukit import device, pack, parts
from dvm.harness.gpukit.__main__ import collect

REPO = Path(__file__).resolve().parents[2]


def _bundle(tmp_path: Path, payload: bytes) -> Path:
    """A small real bundle: bundle/bundle.json + a payload file, as tar.xz."""
    tree = tmp_path / "src" / "bundle"
    (tree / "models").mkdir(parents=True)
    (tree / "wheels").mkdir()
    (tree / "bundle.json").write_text(json.dumps({"variant": "cuda", "models": ["ggml-x.bin"]}))
    (tree / "models" / "ggml-x.bin").write_bytes(payload)
    archive = tmp_path / "bundle.tar.xz"
    with tarfile.open(archive, "w:xz", preset=0) as tar:
        tar.add(tree, arcname="bundle")
    return archive


def test_split_collect_extract_round_trip(tmp_path):
    payload = os.urandom(300_000)  # incompressible: several parts
    index = parts.split(_bundle(tmp_path, payload), tmp_path / "out", 100_000, meta={"python": "3.12"})
    assert len(index["parts"]) >= 3 and index["python"] == "3.12"
    assert sum(p["bytes"] for p in index["parts"]) == index["bytes"] == sum((tmp_path / "out" / p["name"]).stat().st_size
                                                                             for p in index["parts"])
    store = tmp_path / "store"
    first = tmp_path / "call1"
    first.mkdir()
    (first / "part-01").write_bytes((tmp_path / "out" / "part-01").read_bytes())
    new, missing = parts.collect(index, first, store)
    assert new == ["part-01"] and missing == [p["name"] for p in index["parts"][1:]]
    with pytest.raises(parts.PartsError, match="missing part-02"):
        parts.extract(index, store, tmp_path / "unpacked")
    new, missing = parts.collect(index, tmp_path / "out", store)
    assert missing == [] and "part-01" not in new  # an intact part already kept is not copied again
    parts.extract(index, store, tmp_path / "unpacked")
    assert (tmp_path / "unpacked" / "bundle" / "models" / "ggml-x.bin").read_bytes() == payload


def test_damaged_part_and_bad_index_are_refused(tmp_path):
    index = parts.split(_bundle(tmp_path, os.urandom(50_000)), tmp_path / "out", 20_000)
    damaged = tmp_path / "out" / "part-02"
    data = bytearray(damaged.read_bytes())
    data[10] ^= 0xFF
    damaged.write_bytes(bytes(data))
    with pytest.raises(parts.PartsError, match="part-02 is damaged"):
        parts.collect(index, tmp_path / "out", tmp_path / "store")
    with pytest.raises(parts.PartsError, match="index.json is missing"):
        parts.read_index(tmp_path)
    (tmp_path / "index.json").write_text(json.dumps({"schema": 99}))
    with pytest.raises(parts.PartsError, match="not a dvm bundle index"):
        parts.read_index(tmp_path)


def _carried(tmp_path: Path, part: str) -> Path:
    """A folder holding what one device call carries: the index and one part (cut into tmp_path/out)."""
    carried = tmp_path / f"carried-{part}"
    carried.mkdir()
    for name in ("index.json", part):
        (carried / name).write_bytes((tmp_path / "out" / name).read_bytes())
    return carried


def test_stage_command_reports_missing_parts_then_unpacks(tmp_path):
    """`python -m dvm.harness.gpukit stage` as the GPU machine runs it: exit 4 until every part came."""
    index = parts.split(_bundle(tmp_path, os.urandom(90_000)), tmp_path / "out", 40_000)
    root = tmp_path / "root"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    outcomes = []
    for part in index["parts"]:
        carried = _carried(tmp_path, part["name"])
        proc = subprocess.run([sys.executable, "-m", "dvm.harness.gpukit", "stage", "--from", str(carried), "--root", str(root)],
                              capture_output=True, text=True, env=env, cwd=REPO)
        outcomes.append((proc.returncode, proc.stdout.strip()))
    assert [code for code, _ in outcomes] == [4] * (len(index["parts"]) - 1) + [0]
    assert "still missing" in outcomes[0][1] and "bundle ready" in outcomes[-1][1]
    assert (root / device.READY).exists() and (root / "bundle" / "bundle.json").exists()
    again = device.stage(tmp_path / "out", root)
    assert again == (True, f"bundle ready in {root} (already unpacked)")


def test_run_refuses_without_a_staged_bundle(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "dvm.harness.gpukit", "run", "--root", str(tmp_path), "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=REPO)
    assert proc.returncode == 2 and "nothing staged" in proc.stderr and "Traceback" not in proc.stderr


def test_carry_plan_fills_each_call(tmp_path):
    (tmp_path / "index.json").write_text("{}")
    index = {"parts": [{"name": f"part-{i:02d}", "bytes": 20 * 2**20} for i in range(1, 6)]}
    calls = pack.carry_plan(index, tmp_path, tree_bytes=20 * 2**20)  # 64 - 20 MiB: two 20 MiB parts a call
    assert calls == [["part-01", "part-02"], ["part-03", "part-04"], ["part-05"]]
    with pytest.raises(DvmError, match="does not fit"):
        pack.carry_plan(index, tmp_path, tree_bytes=50 * 2**20)


def test_tree_bytes_counts_what_a_call_sends(tmp_path):
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / ".gitignore").write_text("ignored/\n")
    (tmp_path / "tracked.txt").write_bytes(b"x" * 1000)
    (tmp_path / "ignored").mkdir()
    (tmp_path / "ignored" / "big").write_bytes(b"y" * 50_000)
    subprocess.run(["git", "-C", str(tmp_path), "add", "tracked.txt"], check=True)
    (tmp_path / "untracked.txt").write_bytes(b"z" * 500)
    assert pack.tree_bytes(tmp_path) == 1000 + 500 + len("ignored/\n")


def test_device_status_reads_the_probe():
    profile = {"engines": {"whispercpp": {"devices": {"cuda": {"status": "usable", "backend": "CUDA0", "seconds": 0.4}}},
                           "faster-whisper": {"devices": {"cuda": {"status": "unavailable", "reason": "missing libcublas.so.12"}}}}}
    assert device._device_status(profile, "whispercpp", "cuda") == (True, "usable (CUDA0, test inference 0.4 s)")
    ok, why = device._device_status(profile, "faster-whisper", "cuda")
    assert not ok and why == "unavailable: missing libcublas.so.12"
    assert device._device_status({}, "whispercpp", "cuda") == (False, "not reported: the probe gave no reason")
    missing = {"engines": {"faster-whisper": {"available": False, "reason": "ctranslate2 not importable", "devices": {"cpu": {}}}}}
    assert device._device_status(missing, "faster-whisper", "cuda") == (False, "unavailable: ctranslate2 not importable")


def _runner(tmp_path) -> device.Runner:
    (tmp_path / "root" / "bundle").mkdir(parents=True)
    (tmp_path / "root" / "bundle" / "bundle.json").write_text(json.dumps({"variant": "cuda", "models": []}))
    return device.Runner(tmp_path / "root", tmp_path / "out", REPO)


def test_a_step_over_its_time_gets_ctrl_c_and_keeps_what_it_finished(tmp_path):
    """A bench past the budget is interrupted as Ctrl-C would (it saves its finished cells); exit 124."""
    runner = _runner(tmp_path)
    saved = tmp_path / "saved"
    child = ("import sys, time\nprint('cell 1 done', flush=True)\ntry:\n    time.sleep(60)\n"
             "except KeyboardInterrupt:\n    open(sys.argv[1], 'w').write('finished cells')\n    sys.exit(130)\n")
    began = time.monotonic()
    code = runner.step("slow bench", ["-c", child, str(saved)], timeout=1.0)
    runner.close()
    assert code == 124 and time.monotonic() - began < 30
    assert saved.read_text() == "finished cells"
    log = (tmp_path / "out" / "gpu-bench.log").read_text()
    assert "cell 1 done" in log and "over its 1 s, interrupted" in log
    assert runner.steps == [{"step": "slow bench", "exit": 124, "seconds": runner.steps[0]["seconds"]}]


def test_a_step_keeps_only_the_tail_it_asks_for(tmp_path):
    runner = _runner(tmp_path)
    code = runner.step("quantize", ["-c", "for i in range(50): print(f'tensor {i}')"], tail=2)
    runner.close()
    log = (tmp_path / "out" / "gpu-bench.log").read_text()
    assert code == 0 and "tensor 48" in log and "tensor 49" in log and "tensor 47" not in log


def test_collect_puts_returned_files_under_the_gpu_platform(tmp_path):
    files = tmp_path / "files"
    (files / "runs" / "whispercpp-cuda").mkdir(parents=True)
    (files / "runs" / "whispercpp-cuda" / "results.json").write_text("{}")
    with tarfile.open(files / "runs.tar.gz", "w:gz") as tar:
        tar.add(files / "runs", arcname="runs")
    (files / "summary.json").write_text(json.dumps({"platform_id": "linux-x86_64-avx512-cuda-h200"}))
    (files / "table.md").write_text("| a |\n")
    import shutil

    shutil.rmtree(files / "runs")
    target = Path(collect(files, tmp_path / "results"))
    assert target.parent == tmp_path / "results" / "linux-x86_64-avx512-cuda-h200"
    assert (target / "runs" / "whispercpp-cuda" / "results.json").exists() and (target / "table.md").exists()


def test_write_clips_makes_16k_wav_and_keeps_tiers(tmp_path):
    from dvm.harness import clips

    count = pack.write_clips(REPO / "fixtures" / "audio", ["tts", "real"], tmp_path / "clips")
    loaded = clips.load_clips(tmp_path / "clips")
    assert count == len(loaded) and {c.tier for c in loaded} == {"tts", "real"}
    assert all(c.path.suffix == ".wav" for c in loaded)
    source = {c.id: c for c in clips.load_clips(REPO / "fixtures" / "audio")}
    for clip in loaded:
        assert clip.text == source[clip.id].text
        assert abs(clip.seconds - source[clip.id].seconds) < 0.05


def test_library_copies_become_links(tmp_path):
    blob = os.urandom(4096)
    for name in ("libggml-cuda.so", "libggml-cuda.so.0", "libggml-cuda.so.0.13.1", "libother.so.1", "libother.so.1.2"):
        (tmp_path / name).write_bytes(blob if "cuda" in name else b"other")
    (tmp_path / "libother.so.1").write_bytes(b"differs")
    assert pack.link_library_copies(tmp_path) == 2 * len(blob)
    assert os.readlink(tmp_path / "libggml-cuda.so") == "libggml-cuda.so.0.13.1"
    assert os.readlink(tmp_path / "libggml-cuda.so.0") == "libggml-cuda.so.0.13.1"
    assert not (tmp_path / "libother.so.1").is_symlink()  # not a copy: left alone
    assert (tmp_path / "libggml-cuda.so.0").read_bytes() == blob


def test_the_script_stages_as_the_device_calls_do(tmp_path):
    """scripts/gpu-bench.sh, as each device call runs it: `stage --from` a folder of what that call carried."""
    index = parts.split(_bundle(tmp_path, os.urandom(50_000)), tmp_path / "out", 30_000)
    script = str(REPO / "scripts" / "gpu-bench.sh")
    env = {**os.environ, "DVM_GPU_PYTHON": sys.executable, "DVM_GPU_ROOT": str(tmp_path / "root")}
    codes = []
    for part in index["parts"]:
        carried = _carried(tmp_path, part["name"])
        codes.append(subprocess.run(["bash", script, "stage", "--from", str(carried)], env=env, capture_output=True, text=True).returncode)
    assert codes == [4] * (len(index["parts"]) - 1) + [0]
    assert (tmp_path / "root" / device.READY).exists()
    usage = subprocess.run(["bash", script, "help"], capture_output=True, text=True)
    assert usage.returncode == 0 and "rehearse" in usage.stdout and "DVM_GPU_FROM" in usage.stdout
    assert subprocess.run(["bash", script, "nonsense"], capture_output=True, text=True).returncode == 2
