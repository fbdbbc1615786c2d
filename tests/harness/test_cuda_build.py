"""CUDA readiness without a GPU: the pip toolkit's layout, which toolkit wins, the architectures,
the CUDA libraries found in pip's NVIDIA wheels, variants built for another Python, and the bench's
--device/--workers options."""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import pytest

from dvm import cudalibs
from dvm.cli import build_parser
from dvm.errors import DvmError
from dvm.harness.bench import plan, runner
from dvm.harness.variants import cudakit, registry


def _wheel_layout(root: Path) -> Path:
    """What pip --target leaves from NVIDIA's CUDA 13 wheels: nvidia/cu13/{bin,include,lib}."""
    cu = root / "nvidia" / "cu13"
    for sub in ("bin", "include", "lib", "nvvm/bin"):
        (cu / sub).mkdir(parents=True)
    nvcc = cu / "bin" / "nvcc"
    nvcc.write_text("#!/bin/sh\n")
    nvcc.chmod(nvcc.stat().st_mode | stat.S_IEXEC)
    (cu / "include" / "cuda_runtime.h").write_text("")
    for lib in ("libcudart.so.13", "libcublas.so.13", "libcublasLt.so.13"):
        (cu / "lib" / lib).write_bytes(b"\x7fELF")
    return cu


def test_arrange_adds_the_links_cmake_needs(tmp_path):
    cu = _wheel_layout(tmp_path)
    cudakit._arrange(cu)
    assert os.readlink(cu / "lib" / "libcudart.so") == "libcudart.so.13"
    assert (cu / "lib" / "libcublasLt.so").resolve() == (cu / "lib" / "libcublasLt.so.13").resolve()
    assert (cu / "lib64" / "libcublas.so.13").exists()
    machine = "sbsa" if os.uname().machine == "aarch64" else "x86_64"
    assert (cu / "targets" / f"{machine}-linux" / "include" / "cuda_runtime.h").exists()
    assert (cu / "targets" / f"{machine}-linux" / "lib" / "libcudart.so.13").exists()
    cudakit._arrange(cu)  # idempotent


def test_toolkit_precedence(tmp_path, monkeypatch):
    for var in ("DVM_CUDA_HOME", "CUDA_HOME", "CUDA_PATH"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("DVM_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert cudakit.system_toolkit() is None and cudakit.pip_toolkit() is None
    system = _wheel_layout(tmp_path / "system")
    monkeypatch.setenv("PATH", str(system / "bin"))  # an nvcc on PATH whose folder holds the headers: a toolkit
    assert cudakit.system_toolkit() == system
    named = _wheel_layout(tmp_path / "named")
    monkeypatch.setenv("CUDA_HOME", str(named))
    assert cudakit.system_toolkit() == named
    monkeypatch.setenv("DVM_CUDA_HOME", str(system))
    assert cudakit.system_toolkit() == system
    monkeypatch.setenv("DVM_CUDA_HOME", str(tmp_path / "nothing-here"))
    assert cudakit.system_toolkit() == named  # a name without bin/nvcc is passed over
    pip_root = _wheel_layout(cudakit.toolchain_dir())
    assert cudakit.pip_toolkit() is None  # installed but not arranged yet
    cudakit._arrange(pip_root)
    assert cudakit.pip_toolkit() == pip_root


def test_unknown_toolkit_version_is_one_clear_error(tmp_path, monkeypatch):
    for var in ("DVM_CUDA_HOME", "CUDA_HOME", "CUDA_PATH"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("DVM_HOME", str(tmp_path / "home"))
    with pytest.raises(DvmError, match="no CUDA 11.8 wheel set"):
        cudakit.ensure_toolkit("11.8")


def test_architectures(monkeypatch, tmp_path):
    monkeypatch.setenv("DVM_CUDA_ARCHS", "90-real")
    assert cudakit.cuda_archs() == "90-real"
    monkeypatch.delenv("DVM_CUDA_ARCHS")
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi
    assert cudakit.cuda_archs() == cudakit.DEFAULT_ARCHS
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 9.0\necho 8.6\necho 9.0\n")
    smi.chmod(0o755)
    assert cudakit.cuda_archs() == "86-real;90-real"
    assert cudakit.cmake_flags("90-real") == ["-DGGML_CUDA_NO_VMM=ON", "-DCMAKE_CUDA_ARCHITECTURES=90-real"]


def test_cuda_libraries_from_wheels(tmp_path, monkeypatch):
    library = tmp_path / "libctranslate2.so.4"
    library.write_bytes(b"\x7fELF...libcublas.so.12\0...libcudnn.so.9\0libcuda.so.1\0libcublas.so.12\0")
    assert cudalibs.required_sonames(library) == ["libcublas.so.12", "libcudnn.so.9"]
    site = tmp_path / "site"
    (site / "nvidia" / "cublas" / "lib").mkdir(parents=True)
    (site / "nvidia" / "cublas" / "lib" / "libcublas.so.12").write_bytes(b"")
    (site / "nvidia" / "empty" / "lib").mkdir(parents=True)
    dirs = cudalibs.wheel_library_dirs([str(site)])
    assert dirs == [site / "nvidia" / "cublas" / "lib"]
    found = cudalibs.report(library, dirs)
    assert found["found"] == {"libcublas.so.12": str(site / "nvidia" / "cublas" / "lib" / "libcublas.so.12")}
    assert found["missing"] == ["libcudnn.so.9"] and found["hint"] == "missing libcudnn.so.9: pip install nvidia-cudnn-cu12"
    monkeypatch.setattr(sys, "path", [str(site), *sys.path])
    env = cudalibs.child_env({"LD_LIBRARY_PATH": "/opt/x"})
    assert env["LD_LIBRARY_PATH"].split(os.pathsep)[:2] == [str(site / "nvidia" / "cublas" / "lib"), "/opt/x"]
    assert cudalibs._wheel_for("libcublas.so.12") == "nvidia-cublas-cu12"
    assert cudalibs._wheel_for("libcublasLt.so.13") == "nvidia-cublas"
    assert cudalibs.report(tmp_path / "absent.so") == {"required": [], "found": {}, "missing": [], "hint": None}


def test_variant_built_for_another_python_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("DVM_VARIANTS_DIR", str(tmp_path))
    here = f"{sys.version_info[0]}.{sys.version_info[1]}"
    for name, python in (("cuda", "2.7"), ("native", here), ("avx2", None)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "build.json").write_text(json.dumps({"variant": name, **({"python": python} if python else {})}))
    with pytest.raises(DvmError, match=rf"'cuda' was built for CPython 2.7, and this is {here}; rebuild"):
        registry.variant_path("cuda")
    assert registry.variant_path("native") == tmp_path / "native"
    assert sorted(registry.usable_variants()) == ["avx2", "native"]
    assert sorted(registry.installed_variants()) == ["avx2", "cuda", "native"]


def test_bench_device_and_workers_options():
    args = build_parser().parse_args(["bench", "--engines", "faster-whisper", "whispercpp", "--device", "cuda", "--workers", "1", "8"])
    assert args.device == "cuda" and args.workers == [1, 8]
    assert build_parser().parse_args(["bench"]).device == "cpu"
    cells = plan.expand(["whispercpp", "faster-whisper"], ["tiny.en"], [4], [1], ["fit"], ["f16"], ["float16"], ["wheel"], device="cuda")
    devices = {c.config.engine: c.config.device for c in cells}
    assert devices == {"whispercpp": "cpu", "faster-whisper": "cuda"}
    assert [c.id for c in cells][1].endswith("/cuda")
    winner = {"config": cells[0].config.as_dict(), "variant": "cuda"}
    shapes = [(c.workers, c.config.threads) for c in runner.concurrency_cells(winner, 16, [1, 8])]
    assert shapes == [(1, 16), (8, 2)]
    assert all(c.config.device == "gpu" for c in runner.concurrency_cells(winner, 16, [8]))
    assert [(c.workers, c.config.threads) for c in runner.concurrency_cells(winner, 2)] == [(1, 2), (2, 1), (2, 2)]
    assert build_parser().parse_args(["probe", "--variant", "cuda"]).variant == "cuda"
