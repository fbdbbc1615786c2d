"""Source builds of whisper.cpp (through the pywhispercpp sdist) side by side with the PyPI wheel.

Each variant is a pip ``--target`` directory under ``DVM_VARIANTS_DIR`` (default
``DVM_HOME/variants/<name>``). A matrix cell for a variant runs in a subprocess whose
``PYTHONPATH`` starts with that directory, so its ``_pywhispercpp`` shadows the wheel's.

    python -m dvm.harness.variants build native|avx2|openblas|vulkan|cuda [--tools]
    python -m dvm.harness.variants list

The same command is what ``nox -s build-whispercpp`` and Dockerfile.whisper run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from dvm.harness.errors import DvmError
from dvm.harness.paths import dvm_home

SDIST = "pywhispercpp==1.5.1"
WHEEL = "wheel"  # the PyPI wheel, no build

# CMake flags per variant (passed through the sdist's CMAKE_ARGS).
FLAGS: dict[str, list[str]] = {
    "native": ["-DGGML_NATIVE=ON"],
    "avx2": ["-DGGML_NATIVE=OFF", "-DGGML_AVX=ON", "-DGGML_AVX2=ON", "-DGGML_FMA=ON", "-DGGML_F16C=ON", "-DGGML_BMI2=ON"],
    "openblas": ["-DGGML_NATIVE=OFF", "-DGGML_AVX2=ON", "-DGGML_FMA=ON", "-DGGML_F16C=ON", "-DGGML_BLAS=ON", "-DGGML_BLAS_VENDOR=OpenBLAS"],
    "vulkan": ["-DGGML_NATIVE=OFF", "-DGGML_AVX2=ON", "-DGGML_FMA=ON", "-DGGML_F16C=ON", "-DGGML_VULKAN=ON"],
    "cuda": ["-DGGML_NATIVE=OFF", "-DGGML_CUDA=ON"],
    "neon": ["-DGGML_NATIVE=ON"],
}
# What a variant needs from the system, for an actionable error.
NEEDS = {
    "openblas": "OpenBLAS headers (Debian/Ubuntu: libopenblas-dev)",
    "vulkan": "Vulkan headers, glslc and SPIR-V headers (Debian/Ubuntu: libvulkan-dev glslc spirv-headers)",
    "cuda": "the CUDA toolkit (nvcc)",
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
    return path


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


def build(name: str, jobs: int | None = None, extra_flags: list[str] | None = None, tools: bool = False) -> Path:
    """Build the bindings of variant ``name``; with ``tools``, also whisper.cpp's own programs (wcpp_tools.py)."""
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
        source = ["--no-binary", "pywhispercpp", SDIST]
        if name == "vulkan":
            # whisper.cpp 1.8.5's Vulkan backend needs small edits to build against older Vulkan headers
            # (Debian 12's 1.3.239); they are applied to an unpacked copy of the same sdist
            from dvm.harness import sdist, vulkan_patch

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
        from dvm.harness import wcpp_tools

        wcpp_tools.build_tools(name, jobs, extra_flags)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dvm.harness.variants", description="Build or list whisper.cpp source variants.")
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="build one or more variants from the pywhispercpp sdist")
    b.add_argument("names", nargs="+", choices=[WHEEL, *sorted(FLAGS)], help="'wheel' builds only the tools (with --tools)")
    b.add_argument("--jobs", type=int)
    b.add_argument("--tools", action="store_true", help="also build whisper-cli, whisper-bench, whisper-server into <variant>/bin")
    sub.add_parser("list", help="list built variants")
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            for name in args.names:
                if name == WHEEL:  # the PyPI wheel needs no build; its tools do
                    if args.tools:
                        from dvm.harness import wcpp_tools

                        wcpp_tools.build_tools(WHEEL, args.jobs)
                    else:
                        print("the PyPI wheel needs no build (add --tools for whisper.cpp's own programs)", flush=True)
                    continue
                build(name, args.jobs, tools=args.tools)
        else:
            print(json.dumps(installed_variants(), indent=2))
    except DvmError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
