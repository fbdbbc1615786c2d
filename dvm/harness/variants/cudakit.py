"""The CUDA toolkit for building the ``cuda`` variant, from PyPI alone.

NVIDIA ships the compiler, headers and libraries as wheels (``nvidia-cuda-nvcc`` and friends; for
CUDA 13 they all unpack under ``nvidia/cu13``). Installed with ``pip install --target`` into
``DVM_HOME/toolchains/cuda-<version>``, that folder lacks three things CMake's CUDA support needs:
the unversioned library names (``libcudart.so``), ``lib64`` and the ``targets/<arch>-linux``
folder that ``nvcc.profile`` looks in. :func:`ensure_toolkit` adds them as links.

No driver stub (``libcuda.so``) is shipped in these wheels, so the variant is built with
``GGML_CUDA_NO_VMM`` and links only the runtime and cuBLAS; the driver is loaded by the runtime at
start on the machine with the GPU.

A toolkit already on the machine wins: ``DVM_CUDA_HOME``, then ``CUDA_HOME``/``CUDA_PATH``
(a folder with ``bin/nvcc``), then the toolkit of an ``nvcc`` on ``PATH`` (as in NVIDIA's devel images). ``DVM_CUDA_ARCHS`` sets the GPU architectures compiled for.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

from dvm.errors import DvmError
from dvm.harness.procout import last_line
from dvm.paths import dvm_home

VERSION = "13.0"
# One consistent CUDA 13.0 set. 13.x, since the GPU machines this project is lent run driver 580
# (CUDA 13.0) and carry the cu13 cuBLAS in their PyTorch; linked against sonames *.so.13.
WHEELS = {
    "13.0": [
        "nvidia-cuda-nvcc==13.0.88",
        "nvidia-cuda-crt==13.0.88",
        "nvidia-nvvm==13.0.88",
        "nvidia-cuda-runtime==13.0.96",
        "nvidia-cuda-cccl==13.0.85",
        "nvidia-cuda-culibos==13.0.85",
        "nvidia-cublas==13.0.2.14",
    ],
}
# sm_86 machine code also runs on sm_89 (RTX 30xx/40xx, A10, L4); sm_90 is the H100/H200.
DEFAULT_ARCHS = "86-real;90-real"


def toolchain_dir(version: str = VERSION) -> Path:
    return dvm_home() / "toolchains" / f"cuda-{version}"


def _root_of(folder: Path, version: str) -> Path:
    return folder / "nvidia" / f"cu{version.split('.')[0]}"


def system_toolkit() -> Path | None:
    """A toolkit named by the environment, or the one whose nvcc is on PATH (a whole toolkit: headers too)."""
    for var in ("DVM_CUDA_HOME", "CUDA_HOME", "CUDA_PATH"):
        value = os.environ.get(var)
        if value and (Path(value) / "bin" / "nvcc").is_file():
            return Path(value)
    nvcc = shutil.which("nvcc")
    if nvcc:
        root = Path(nvcc).resolve().parent.parent
        if (root / "include" / "cuda_runtime.h").is_file():
            return root
    return None


def pip_toolkit(version: str = VERSION) -> Path | None:
    root = _root_of(toolchain_dir(version), version)
    return root if (root / "bin" / "nvcc").is_file() and (root / ".dvm-ready").exists() else None


def ensure_toolkit(version: str = VERSION, python: str | None = None) -> Path:
    """The toolkit root to build with: the environment's, else the pip one (installed on first use)."""
    found = system_toolkit() or pip_toolkit(version)
    if found:
        return found
    if version not in WHEELS:
        raise DvmError(f"no CUDA {version} wheel set is known; known: {', '.join(WHEELS)}")
    if not sys.platform.startswith("linux") or platform.machine().lower() not in ("x86_64", "amd64", "aarch64"):
        raise DvmError("the pip-shipped CUDA toolkit exists for Linux x86-64 and aarch64 only; set CUDA_HOME to a toolkit")
    folder = toolchain_dir(version)
    staging = folder.with_name(folder.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    started = time.time()
    print(f"installing the CUDA {version} toolkit from PyPI into {folder} (about 1 GB) ...", flush=True)
    command = [python or sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-compile",
               "--target", str(staging), *WHEELS[version]]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise DvmError(f"pip could not install the CUDA {version} wheels: {last_line(result.stderr)}")
    _arrange(_root_of(staging, version))
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(staging, folder)
    root = _root_of(folder, version)
    print(f"CUDA toolkit ready in {root} ({time.time() - started:.0f} s)", flush=True)
    return root


def _arrange(root: Path) -> None:
    """Add the links a toolkit root has and the wheels leave out."""
    lib = root / "lib"
    for versioned in sorted(lib.glob("lib*.so.*")):
        plain = lib / (versioned.name.split(".so.")[0] + ".so")
        if not plain.exists():
            plain.symlink_to(versioned.name)
    if not (root / "lib64").exists():
        (root / "lib64").symlink_to("lib")
    machine = "sbsa" if platform.machine().lower() == "aarch64" else "x86_64"
    target = root / "targets" / f"{machine}-linux"
    target.mkdir(parents=True, exist_ok=True)
    for name in ("include", "lib"):
        if not (target / name).exists():
            (target / name).symlink_to(Path("..") / ".." / name)
    (root / ".dvm-ready").write_text("arranged by dvm.harness.variants.cudakit\n")


def cuda_archs() -> str:
    """The architectures to compile for: DVM_CUDA_ARCHS, else the visible GPU's, else DEFAULT_ARCHS."""
    env = os.environ.get("DVM_CUDA_ARCHS")
    if env:
        return env
    if shutil.which("nvidia-smi"):
        result = subprocess.run(["nvidia-smi", "--query-gpu=compute_cap", "--format=csv,noheader"],
                                capture_output=True, text=True)
        caps = sorted({line.strip().replace(".", "") for line in result.stdout.splitlines() if line.strip()})
        if result.returncode == 0 and caps:
            return ";".join(f"{cap}-real" for cap in caps)
    return DEFAULT_ARCHS


def build_env(root: Path, base: dict[str, str]) -> dict[str, str]:
    """The environment that makes CMake build with toolkit ``root``."""
    env = dict(base)
    env["CUDACXX"] = str(root / "bin" / "nvcc")
    env["CUDAToolkit_ROOT"] = str(root)
    env["PATH"] = os.pathsep.join([str(root / "bin"), env.get("PATH", "")])
    # the linker finds libcublas.so.13 for the programs linked against libggml-cuda (a dependency of a
    # dependency) through LD_LIBRARY_PATH: the wheels' lib folder is in no default search path
    env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [str(root / "lib"), env.get("LD_LIBRARY_PATH")]))
    return env


def cmake_flags(archs: str) -> list[str]:
    return ["-DGGML_CUDA_NO_VMM=ON", f"-DCMAKE_CUDA_ARCHITECTURES={archs}"]
