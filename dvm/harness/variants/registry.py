"""The registry of whisper.cpp builds: the variants' CMake flags, where built ones live, and the
environment that makes a process use one. A leaf: it imports nothing from dvm but dvm.paths,
dvm.errors and dvm.cudalibs (building is bindings.py and tools.py; the command line is __main__.py).

Source builds of whisper.cpp (through the pywhispercpp sdist) sit side by side with the PyPI wheel.
Each variant is a pip ``--target`` directory under ``DVM_VARIANTS_DIR`` (default
``DVM_HOME/variants/<name>``). A matrix cell for a variant runs in a subprocess whose
``PYTHONPATH`` starts with that directory, so its ``_pywhispercpp`` shadows the wheel's.

    python -m dvm.harness.variants build native|avx2|openblas|vulkan|cuda [--tools]
    python -m dvm.harness.variants list

The same command is what ``nox -s build-whispercpp`` and Dockerfile.whisper run.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from dvm import cudalibs
from dvm.errors import DvmError
from dvm.paths import dvm_home

# The one pin of the pywhispercpp release whose sdist (whisper.cpp 1.8.5) dvm builds from; pyproject.toml's
# dependency range must contain it (tests/test_dockerfile.py checks).
PACKAGE = "pywhispercpp"
VERSION = "1.5.1"
SDIST = f"{PACKAGE}=={VERSION}"
WHEEL = "wheel"  # the PyPI wheel, no build

# CMake flags per variant (passed through the sdist's CMAKE_ARGS).
FLAGS: dict[str, list[str]] = {
    "native": ["-DGGML_NATIVE=ON"],
    "avx2": ["-DGGML_NATIVE=OFF", "-DGGML_AVX=ON", "-DGGML_AVX2=ON", "-DGGML_FMA=ON", "-DGGML_F16C=ON", "-DGGML_BMI2=ON"],
    "openblas": ["-DGGML_NATIVE=OFF", "-DGGML_AVX2=ON", "-DGGML_FMA=ON", "-DGGML_F16C=ON", "-DGGML_BLAS=ON", "-DGGML_BLAS_VENDOR=OpenBLAS"],
    "vulkan": ["-DGGML_NATIVE=OFF", "-DGGML_AVX2=ON", "-DGGML_FMA=ON", "-DGGML_F16C=ON", "-DGGML_VULKAN=ON"],
    # the CPU part (mel, fallback ops) as the avx2 variant; ggml ignores the x86 flags elsewhere
    "cuda": ["-DGGML_NATIVE=OFF", "-DGGML_AVX=ON", "-DGGML_AVX2=ON", "-DGGML_FMA=ON", "-DGGML_F16C=ON", "-DGGML_BMI2=ON", "-DGGML_CUDA=ON"],
    "neon": ["-DGGML_NATIVE=ON"],
}
# What a variant needs from the system, for an actionable error.
NEEDS = {
    "openblas": "OpenBLAS headers (Debian/Ubuntu: libopenblas-dev)",
    "vulkan": "Vulkan headers, glslc and SPIR-V headers (Debian/Ubuntu: libvulkan-dev glslc spirv-headers)",
    "cuda": "the CUDA toolkit: DVM_CUDA_HOME/CUDA_HOME, nvcc on PATH, or the PyPI wheels (dvm installs them)",
}


def variants_dir() -> Path:
    env = os.environ.get("DVM_VARIANTS_DIR")
    path = Path(env) if env else dvm_home() / "variants"
    path.mkdir(parents=True, exist_ok=True)
    return path


def variant_path(name: str) -> Path | None:
    """The --target directory of a built variant, or None for the wheel."""
    if name == WHEEL:
        return None
    path = variants_dir() / name
    if not (path / "build.json").exists():
        raise DvmError(f"whisper.cpp variant {name!r} is not built; run `nox -s build-whispercpp -- {name}`")
    try:
        meta = json.loads((path / "build.json").read_text())
    except json.JSONDecodeError:
        raise DvmError(f"whisper.cpp variant {name!r}: {path / 'build.json'} is unreadable; rebuild it") from None
    mismatch = python_mismatch(meta)
    if mismatch:
        raise DvmError(f"whisper.cpp variant {name!r} {mismatch}; rebuild it here: python -m dvm.harness.variants build {name}")
    return path


def python_mismatch(meta: dict) -> str | None:
    """Why a built variant's extension cannot load in this interpreter, or None (older builds say nothing)."""
    built_for = meta.get("python")
    here = f"{sys.version_info[0]}.{sys.version_info[1]}"
    if built_for and built_for != here:
        return f"was built for CPython {built_for}, and this is {here}"
    return None


def usable_variants() -> dict[str, dict]:
    """The built variants whose extension this interpreter can load."""
    return {name: meta for name, meta in installed_variants().items() if not python_mismatch(meta)}


def installed_variants() -> dict[str, dict]:
    out = {}
    for path in sorted(variants_dir().glob("*/build.json")):
        try:
            out[path.parent.name] = json.loads(path.read_text())
        except json.JSONDecodeError:
            continue
    return out


def subprocess_env(name: str, base: dict | None = None) -> dict[str, str]:
    """Environment for a subprocess that should import the variant's bindings."""
    env = dict(base if base is not None else os.environ)
    path = variant_path(name)
    if path is not None:
        env["PYTHONPATH"] = _prepend(str(path), env.get("PYTHONPATH"))
        # the sdist's build leaves the extension's RUNPATH pointing at its temporary build folder;
        # the shared libraries sit beside it in the target directory
        library_var = "DYLD_LIBRARY_PATH" if sys.platform == "darwin" else "PATH" if os.name == "nt" else "LD_LIBRARY_PATH"
        env[library_var] = _prepend(str(path), env.get(library_var))
    if name == "cuda":  # libcudart/libcublas from pip's NVIDIA wheels (PyTorch's, say) where no toolkit is installed
        env = cudalibs.child_env(env)
    if name == "vulkan":
        # ggml-vulkan skips CPU-type devices (lavapipe) unless told which device to use
        env.setdefault("GGML_VK_VISIBLE_DEVICES", "0")
    return env


def activate(name: str) -> None:
    """Make this `dvm` process use a built variant: re-exec with its environment unless already so."""
    if variant_path(name) is None or os.environ.get("DVM_ACTIVE_VARIANT") == name:
        return
    env = subprocess_env(name)
    env["DVM_ACTIVE_VARIANT"] = name
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, "-m", "dvm.cli", *sys.argv[1:]], env)


def _prepend(item: str, current: str | None) -> str:
    return os.pathsep.join([item] + ([current] if current else []))
