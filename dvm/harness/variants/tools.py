"""whisper.cpp's own programs beside dvm: ``whisper-cli``, ``whisper-bench`` and ``whisper-server``
built from the same pywhispercpp sdist and CMake flags as a variant, into ``<variants dir>/<variant>/bin``.

The tools are linked statically (``BUILD_SHARED_LIBS=OFF``), so a variant's ``bin/`` folder works
on its own. ``wheel`` means the flags the PyPI wheel reports (AVX/AVX2/FMA/F16C/BMI2 + OpenMP on
x86-64, no AVX-512; a generic build elsewhere).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import tarfile
import time
from pathlib import Path

from dvm.errors import DvmError
from dvm.harness.variants import sdist
from dvm.harness.variants.registry import FLAGS, NEEDS, WHEEL, variants_dir

TOOLS = ("whisper-cli", "whisper-bench", "whisper-server")
EXE = ".exe" if os.name == "nt" else ""
_X86 = platform.machine().lower() in ("x86_64", "amd64", "i686", "x86")


def tool_flags(variant: str) -> list[str]:
    """The CMake flags of a variant; for the PyPI wheel, the feature set its system info reports."""
    if variant == WHEEL:
        return list(FLAGS["avx2"]) if _X86 else ["-DGGML_NATIVE=OFF"]
    if variant not in FLAGS:
        raise DvmError(f"unknown variant {variant!r}; choose wheel or one of {', '.join(FLAGS)}")
    return list(FLAGS[variant])


def tools_dir(variant: str, base: Path | None = None) -> Path:
    return (base or variants_dir()) / variant / "bin"


def tool_path(variant: str, name: str, base: Path | None = None) -> Path | None:
    """The built binary ``name`` (whisper-cli, whisper-bench, whisper-server) of ``variant``, or None."""
    if name not in TOOLS:
        raise DvmError(f"unknown tool {name!r}; one of {', '.join(TOOLS)}")
    path = tools_dir(variant, base) / (name + EXE)
    return path if path.is_file() else None


def installed_tools(base: Path | None = None) -> dict[str, dict]:
    out = {}
    for meta in sorted((base or variants_dir()).glob("*/bin/tools.json")):
        try:
            out[meta.parent.parent.name] = json.loads(meta.read_text())
        except json.JSONDecodeError:
            continue
    return out


def find_tool(name: str, variant: str | None = None) -> Path | None:
    """A built tool: in this DVM_HOME's variants, else the user's default one (tests run in their own DVM_HOME).

    Without ``variant``, the wheel-equivalent build is preferred, then any other.
    """
    import platformdirs  # noqa: PLC0415 - only where a user cache is needed

    bases = [variants_dir(), Path(platformdirs.user_data_dir("dvm", appauthor=False)) / "variants"]
    for base in dict.fromkeys(bases):
        names = [variant] if variant else [WHEEL] + sorted(installed_tools(base))
        for candidate in names:
            path = tool_path(candidate, name, base)
            if path:
                return path
    return None


def source_tree() -> Path:
    """whisper.cpp's tree from the pywhispercpp sdist, extracted once into the cache."""
    root = sdist.cache_dir() / "wcpp-src" / sdist.VERSION
    tree = root / "whisper.cpp"
    if (root / ".complete").exists():
        return tree
    archive = sdist.sdist_archive()
    prefix = f"{sdist.PACKAGE}-{sdist.VERSION}/"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    with tarfile.open(archive) as tar:
        members = []
        for member in tar.getmembers():
            if not member.name.startswith(prefix + "whisper.cpp/") or not (member.isfile() or member.isdir()):
                continue
            member.name = member.name[len(prefix):]
            members.append(member)
        kwargs = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        tar.extractall(root, members=members, **kwargs)
    (root / ".complete").write_text(sdist.VERSION)
    return tree


def _cmake() -> str:
    found = shutil.which("cmake")
    if found:
        return found
    raise DvmError("building whisper.cpp's tools needs CMake (pip install cmake, or the system package) and a C++ compiler")


def build_tools(variant: str, jobs: int | None = None, extra_flags: list[str] | None = None, keep_build: bool = False) -> Path:
    """Build whisper-cli, whisper-bench and whisper-server for ``variant`` into ``<variants dir>/<variant>/bin``."""
    flags = tool_flags(variant) + (extra_flags or [])
    source = source_tree()
    build = sdist.cache_dir() / "wcpp-build" / variant
    cmake = _cmake()
    configure = [cmake, "-S", str(source), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release", "-DBUILD_SHARED_LIBS=OFF",
                 "-DWHISPER_BUILD_EXAMPLES=ON", "-DWHISPER_BUILD_SERVER=ON", "-DWHISPER_BUILD_TESTS=OFF",
                 "-DWHISPER_SDL2=OFF", "-DWHISPER_CURL=OFF", *flags]
    if shutil.which("ninja") and not (build / "CMakeCache.txt").exists():
        configure[1:1] = ["-G", "Ninja"]
    compile_ = [cmake, "--build", str(build), "--config", "Release", "-j", str(jobs or os.cpu_count() or 2),
                "--target", *TOOLS]
    started = time.time()
    print(f"building whisper.cpp tools for {variant}: {' '.join(flags)}", flush=True)
    for step in (configure, compile_):
        result = subprocess.run(step, check=False)
        if result.returncode != 0:
            hint = f"; it needs {NEEDS[variant]}" if variant in NEEDS else ""
            raise DvmError(f"building whisper.cpp tools for {variant} failed ({Path(step[0]).name} exit {result.returncode}){hint}")
    target = tools_dir(variant)
    target.mkdir(parents=True, exist_ok=True)
    for name in TOOLS:
        found = [p for p in build.rglob(name + EXE) if p.is_file() and os.access(p, os.X_OK)]
        if not found:
            raise DvmError(f"the build finished but {name}{EXE} is not under {build}")
        partial = target / (name + EXE + ".partial")
        shutil.copy2(found[0], partial)
        os.replace(partial, target / (name + EXE))
    meta = {"variant": variant, "flags": flags, "sdist": f"{sdist.PACKAGE}=={sdist.VERSION}", "tools": list(TOOLS),
            "built": time.strftime("%Y-%m-%dT%H:%M:%S"), "build_seconds": round(time.time() - started, 1),
            "static": True}
    (target / "tools.json").write_text(json.dumps(meta, indent=2))
    if not keep_build:
        shutil.rmtree(build, ignore_errors=True)
    print(f"whisper.cpp tools for {variant} ready in {target} ({meta['build_seconds']} s)", flush=True)
    return target
