"""Building a variant's Python bindings: ``pip wheel`` of the pywhispercpp sdist with the variant's
CMake flags, installed with ``pip install --target`` into its directory (see registry.py).

``python`` picks the interpreter the extension is built for (default: this one), so a variant can be
built here for a machine whose Python differs (the lent GPU machines run CPython 3.12).

The ``cuda`` variant builds with the CUDA toolkit from cudakit.py (PyPI wheels unless one is on the
machine) and turns on whisper.cpp's examples in the same CMake build, so whisper-cli, whisper-bench
and whisper-server come from that one (long) compile of the CUDA kernels, into ``<variant>/bin``,
linked against the variant's shared libraries.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from dvm.errors import DvmError
from dvm.harness.variants import cudakit, sdist, vulkan_patch
from dvm.harness.variants.registry import FLAGS, NEEDS, PACKAGE, SDIST, variants_dir
from dvm.harness.variants.tools import EXE, TOOLS, build_tools


def build(name: str, jobs: int | None = None, extra_flags: list[str] | None = None, tools: bool = False,
          python: str | None = None) -> Path:
    """Build the bindings of variant ``name``; with ``tools``, also whisper.cpp's own programs (tools.py).

    ``python``: the interpreter to build the extension for (default: this one)."""
    if name not in FLAGS:
        raise DvmError(f"unknown variant {name!r}; choose one of {', '.join(FLAGS)}")
    target = variants_dir() / name
    flags = FLAGS[name] + (extra_flags or [])
    if sys.platform.startswith("linux"):
        # find libwhisper/libggml beside the extension, not in pip's temporary build folder; cuda's tools
        # come from this same build (see the module text): $ORIGIN/.. finds the libraries from bin/
        rpath = "$ORIGIN;$ORIGIN/.." if name == "cuda" else "$ORIGIN"
        flags += ["-DCMAKE_BUILD_WITH_INSTALL_RPATH=ON", f"-DCMAKE_INSTALL_RPATH={rpath}"]
    env = dict(os.environ)
    python = python or sys.executable
    cuda: dict = {}
    if name == "cuda":
        root = cudakit.ensure_toolkit()
        archs = cudakit.cuda_archs()
        env = cudakit.build_env(root, env)
        flags += [*cudakit.cmake_flags(archs), "-DWHISPER_BUILD_EXAMPLES=ON", "-DWHISPER_BUILD_SERVER=ON", "-DWHISPER_BUILD_TESTS=OFF",
                  "-DWHISPER_SDL2=OFF", "-DWHISPER_CURL=OFF"]
        cuda = {"toolkit": str(root), "archs": archs}
    env["CMAKE_ARGS"] = " ".join(flags)
    env["CMAKE_BUILD_PARALLEL_LEVEL"] = str(jobs or os.cpu_count() or 2)
    started = time.time()
    patches: list[str] = []
    with tempfile.TemporaryDirectory() as wheelhouse, tempfile.TemporaryDirectory() as srcdir:
        source = ["--no-binary", PACKAGE, SDIST]
        tree = None
        if name == "cuda":
            # built in place in a folder kept until the build succeeds: the tools are picked out of it, and
            # a build stopped late (a link error, an interrupt) resumes with the CUDA kernels already compiled
            keep = variants_dir() / f"{name}.build"
            tree = next(iter(sorted(keep.glob(f"{PACKAGE}-*"))), None) if keep.is_dir() else None
            if tree is None:
                shutil.rmtree(keep, ignore_errors=True)
                keep.mkdir(parents=True)
                tree = sdist.unpack(sdist.sdist_archive(), keep)
            else:
                print(f"resuming the build in {tree}", flush=True)
            source = [str(tree)]
        elif name == "vulkan":
            # whisper.cpp 1.8.5's Vulkan backend needs small edits to build against older Vulkan headers
            # (Debian 12's 1.3.239); they are applied to an unpacked copy of the same sdist
            tree, patches = vulkan_patch.extract_patched_sdist(sdist.sdist_archive(), Path(srcdir))
            source = [str(tree)]
        command = [python, "-m", "pip", "wheel", "--no-cache-dir", "--no-deps", *source, "-w", wheelhouse]
        print(f"building whisper.cpp variant {name}: {' '.join(flags)}", flush=True)
        result = subprocess.run(command, env=env)
        wheels = list(Path(wheelhouse).glob("pywhispercpp-*.whl"))
        if result.returncode != 0 or not wheels:
            hint = f"; it needs {NEEDS[name]}" if name in NEEDS else ""
            raise DvmError(f"building variant {name} failed (pip wheel exit {result.returncode}){hint}")
        staging = target.with_name(name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        subprocess.run([python, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(staging), str(wheels[0])], check=True)
        meta = {"variant": name, "flags": flags, "sdist": SDIST, "built": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "build_seconds": round(time.time() - started, 1), "wheel": wheels[0].name, "patches": patches,
                "python": _python_tag(python), **cuda}
        if tree is not None:
            meta["tools"] = _pick_tools(tree, staging / "bin")
        (staging / "build.json").write_text(json.dumps(meta, indent=2))
        shutil.rmtree(target, ignore_errors=True)
        os.replace(staging, target)
        if tree is not None:
            shutil.rmtree(tree.parent, ignore_errors=True)
    print(f"variant {name} ready in {target} ({meta['build_seconds']} s)", flush=True)
    if tools and name != "cuda":  # whisper-cli, whisper-bench, whisper-server from the same sdist and flags, into target/bin
        build_tools(name, jobs, extra_flags)
    return target


def _python_tag(python: str) -> str:
    """'3.12' for the interpreter at ``python``."""
    result = subprocess.run([python, "-c", "import sys; print(f'{sys.version_info[0]}.{sys.version_info[1]}')"],
                            capture_output=True, text=True, check=True)
    return result.stdout.strip()


def _pick_tools(tree: Path, bin_dir: Path) -> list[str]:
    """Copy whisper.cpp's programs out of the sdist's in-tree build folder into ``bin_dir``."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    picked = []
    for tool in (*TOOLS, "whisper-quantize"):  # quantize: the GPU run makes q8_0 from the f16 it carries
        found = [p for p in (tree / "build").rglob(tool + EXE) if p.is_file() and os.access(p, os.X_OK)]
        if found:
            shutil.copy2(found[0], bin_dir / (tool + EXE))
            picked.append(tool)
    if picked:
        meta = {"variant": bin_dir.parent.name, "tools": picked, "built": time.strftime("%Y-%m-%dT%H:%M:%S"), "static": False}
        (bin_dir / "tools.json").write_text(json.dumps(meta, indent=2))
    return picked
