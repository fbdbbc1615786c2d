"""CUDA libraries from pip's NVIDIA wheels, for engines started in child processes: the cuBLAS that
CTranslate2 (faster-whisper) opens at run time, and the runtime and cuBLAS the ``cuda`` whisper.cpp
variant links against.

CTranslate2's Linux wheel carries its CUDA runtime but opens cuBLAS (and, in some releases, cuDNN)
by soname when a model is put on the GPU: ``libcublas.so.12`` for a build against CUDA 12. Those
come from the system toolkit or from wheels such as ``nvidia-cublas-cu12`` and
``nvidia-cudnn-cu12``, which unpack under ``site-packages/nvidia/<name>/lib`` (CUDA 13 wheels:
``nvidia/cu13/lib``) where the dynamic loader does not look. dvm starts every engine in a child
process, so :func:`child_env` puts those folders on the child's ``LD_LIBRARY_PATH`` (the
``cuda`` variant's ``libggml-cuda.so`` needs ``libcudart.so.13`` and ``libcublas.so.13``, which
PyTorch's CUDA 13 wheels carry), and :func:`report` says which sonames the installed CTranslate2
asks for and which are missing.
Standard library only.
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
from pathlib import Path

_SONAME = re.compile(rb"lib(?:cublasLt|cublas|cudnn|cudart)\.so\.\d+")


def wheel_library_dirs(paths: list[str] | None = None) -> list[Path]:
    """Folders of shared libraries from NVIDIA's wheels on ``sys.path`` (or ``paths``), in path order."""
    found: list[Path] = []
    for entry in paths if paths is not None else sys.path:
        base = Path(entry or ".") / "nvidia"
        if not base.is_dir():
            continue
        for lib in sorted(base.glob("*/lib")):
            if lib.is_dir() and any(lib.glob("lib*.so*")) and lib not in found:
                found.append(lib)
    return found


def ctranslate2_library() -> Path | None:
    """The libctranslate2 shared library of the installed ctranslate2 package, without importing it."""
    spec = importlib.util.find_spec("ctranslate2")
    if spec is None or not spec.submodule_search_locations:
        return None
    package = Path(next(iter(spec.submodule_search_locations)))
    for folder in (package.parent / "ctranslate2.libs", package):
        for candidate in sorted(folder.glob("libctranslate2*.so*")) if folder.is_dir() else []:
            return candidate
    return None


def required_sonames(library: Path | None = None) -> list[str]:
    """The CUDA sonames a CTranslate2 build opens by name (read from its binary), e.g. ['libcublas.so.12']."""
    library = library or ctranslate2_library()
    if library is None:
        return []
    try:
        data = library.read_bytes()
    except OSError:
        return []
    return sorted({m.group().decode() for m in _SONAME.finditer(data)})


def _system_dirs() -> list[Path]:
    dirs = [Path(p) for p in os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p]
    for conf in [Path("/etc/ld.so.conf"), *sorted(Path("/etc/ld.so.conf.d").glob("*.conf"))]:
        try:
            dirs += [Path(line.strip()) for line in conf.read_text().splitlines() if line.strip().startswith("/")]
        except OSError:
            continue
    dirs += [Path(p) for p in ("/usr/local/cuda/lib64", "/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu",
                               "/usr/lib64", "/usr/lib", "/lib")]
    return dirs


def locate(soname: str, dirs: list[Path] | None = None) -> Path | None:
    """Where ``soname`` is: in a wheel folder first, else in the loader's usual places."""
    for folder in (dirs if dirs is not None else wheel_library_dirs() + _system_dirs()):
        candidate = folder / soname
        if candidate.exists():
            return candidate
    return None


def report(library: Path | None = None, dirs: list[Path] | None = None) -> dict:
    """{'required': [...], 'found': {soname: path}, 'missing': [...], 'hint': str | None}."""
    required = required_sonames(library)
    found = {name: str(path) for name in required if (path := locate(name, dirs))}
    missing = [name for name in required if name not in found]
    hint = None
    if missing:
        wheels = sorted({_wheel_for(name) for name in missing})
        hint = f"missing {', '.join(missing)}: pip install {' '.join(wheels)}"
    return {"required": required, "found": found, "missing": missing, "hint": hint}


def _wheel_for(soname: str) -> str:
    """The PyPI wheel that ships ``soname`` (CUDA 13's wheels dropped the -cuNN suffix)."""
    major = int(soname.rsplit(".", 1)[-1])
    if soname.startswith("libcudnn"):
        return "nvidia-cudnn-cu12"  # cuDNN 9 for CUDA 12, the one CTranslate2's CUDA 12 wheels use
    name = "nvidia-cuda-runtime" if soname.startswith("libcudart") else "nvidia-cublas"
    return name if major >= 13 else f"{name}-cu{major}"


def child_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """``env`` (default: this process's) with the NVIDIA wheel folders on LD_LIBRARY_PATH, for a child
    process that may open cuBLAS/cuDNN. Unchanged where no such wheels are installed."""
    env = dict(os.environ if env is None else env)
    dirs = [str(d) for d in wheel_library_dirs()]
    if dirs and sys.platform.startswith("linux"):
        current = [p for p in env.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p]
        env["LD_LIBRARY_PATH"] = os.pathsep.join(dict.fromkeys(dirs + current))
    return env
