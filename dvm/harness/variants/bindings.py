"""Building a variant's Python bindings: ``pip wheel`` of the pywhispercpp sdist with the variant's
CMake flags, installed with ``pip install --target`` into its directory (see registry.py)."""

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
from dvm.harness.variants import sdist, vulkan_patch
from dvm.harness.variants.registry import FLAGS, NEEDS, PACKAGE, SDIST, variants_dir
from dvm.harness.variants.tools import build_tools


def build(name: str, jobs: int | None = None, extra_flags: list[str] | None = None, tools: bool = False) -> Path:
    """Build the bindings of variant ``name``; with ``tools``, also whisper.cpp's own programs (tools.py)."""
    if name not in FLAGS:
        raise DvmError(f"unknown variant {name!r}; choose one of {', '.join(FLAGS)}")
    target = variants_dir() / name
    flags = FLAGS[name] + (extra_flags or [])
    if sys.platform.startswith("linux"):
        # find libwhisper/libggml beside the extension, not in pip's temporary build folder
        flags += ["-DCMAKE_BUILD_WITH_INSTALL_RPATH=ON", "-DCMAKE_INSTALL_RPATH=$ORIGIN"]
    env = dict(os.environ)
    env["CMAKE_ARGS"] = " ".join(flags)
    env["CMAKE_BUILD_PARALLEL_LEVEL"] = str(jobs or os.cpu_count() or 2)
    started = time.time()
    patches: list[str] = []
    with tempfile.TemporaryDirectory() as wheelhouse, tempfile.TemporaryDirectory() as srcdir:
        source = ["--no-binary", PACKAGE, SDIST]
        if name == "vulkan":
            # whisper.cpp 1.8.5's Vulkan backend needs small edits to build against older Vulkan headers
            # (Debian 12's 1.3.239); they are applied to an unpacked copy of the same sdist
            tree, patches = vulkan_patch.extract_patched_sdist(sdist.sdist_archive(), Path(srcdir))
            source = [str(tree)]
        command = [sys.executable, "-m", "pip", "wheel", "--no-cache-dir", "--no-deps", *source, "-w", wheelhouse]
        print(f"building whisper.cpp variant {name}: {' '.join(flags)}", flush=True)
        result = subprocess.run(command, env=env)
        wheels = list(Path(wheelhouse).glob("pywhispercpp-*.whl"))
        if result.returncode != 0 or not wheels:
            hint = f"; it needs {NEEDS[name]}" if name in NEEDS else ""
            raise DvmError(f"building variant {name} failed (pip wheel exit {result.returncode}){hint}")
        staging = target.with_name(name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(staging), str(wheels[0])], check=True)
        meta = {"variant": name, "flags": flags, "sdist": SDIST, "built": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "build_seconds": round(time.time() - started, 1), "wheel": wheels[0].name, "patches": patches}
        (staging / "build.json").write_text(json.dumps(meta, indent=2))
        shutil.rmtree(target, ignore_errors=True)
        os.replace(staging, target)
    print(f"variant {name} ready in {target} ({meta['build_seconds']} s)", flush=True)
    if tools:  # whisper-cli, whisper-bench, whisper-server from the same sdist and flags, into target/bin
        build_tools(name, jobs, extra_flags)
    return target
