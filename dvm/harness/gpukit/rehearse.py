"""Every step of the GPU run, here: ``python -m dvm.harness.gpukit.rehearse`` (``scripts/gpu-bench.sh rehearse``).

The GPU machine's side runs in a virtual environment of CPython 3.12 (the GPU machine's) that holds
only packages that machine's image has, so a dependency the bundle forgot fails here. The parts
travel as the device calls would carry them (the plan), each call staged from its own folder; then
the run, whose CUDA steps take their "not available" paths on this GPU-less machine. Last, the
returned files are checked against the device tool's limits (8 files, 16 MiB each).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from dvm.errors import DvmError, report
from dvm.harness.gpukit import device, pack, parts

REPO = Path(__file__).resolve().parents[3]
# The GPU machine's image has these (KINDS.md); the rehearsal's Python gets them and nothing else.
IMAGE_PACKAGES = ["numpy", "rich", "regex", "click", "requests", "tqdm", "pandas", "matplotlib", "py-cpuinfo", "nvidia-ml-py",
                  "nvidia-cuda-runtime>=13,<14", "nvidia-cublas>=13,<14"]  # the last two: PyTorch's CUDA 13 wheels there
MAX_FILES, MAX_FILE_BYTES = 8, 16 * 1024 * 1024


def find_python(version: str = "3.12") -> str:
    candidates = [os.environ.get("DVM_REHEARSE_PYTHON"), shutil.which(f"python{version}"),
                  *sorted(glob.glob(os.path.expanduser(f"~/.pyenv/versions/{version}*/bin/python")))]
    for candidate in candidates:
        if not candidate or not Path(candidate).exists():
            continue
        probe = subprocess.run([candidate, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"], capture_output=True, text=True)
        if probe.returncode == 0 and probe.stdout.strip() == version:  # a pyenv shim may exist and still not run
            return candidate
    raise DvmError(f"the rehearsal needs CPython {version} (the GPU machine's); set DVM_REHEARSE_PYTHON")


def image_venv(base_python: str, folder: Path) -> str:
    """A venv like the GPU machine's Python (made once, then reused)."""
    python = folder / "bin" / "python"
    marker = folder / ".image-packages"
    if python.exists() and marker.exists() and marker.read_text() == " ".join(IMAGE_PACKAGES):
        return str(python)
    shutil.rmtree(folder, ignore_errors=True)
    subprocess.run([base_python, "-m", "venv", str(folder)], check=True)
    print(f"rehearsal Python: {folder} with {' '.join(IMAGE_PACKAGES)}", flush=True)
    result = subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *IMAGE_PACKAGES],
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise DvmError(f"could not make the rehearsal venv: {(result.stderr.strip().splitlines() or ['?'])[-1]}")
    marker.write_text(" ".join(IMAGE_PACKAGES))
    return str(python)


# the CUDA bench's command runs here too, on the CUDA build's CPU fallback, over these tiers (2 cores: keep it short)
CUDA_TIERS = ["silence", "tts"]


def rehearse(parts_dir: Path, work: Path, repeats: int = 1) -> dict:
    started = time.time()
    index = parts.read_index(parts_dir)
    python = image_venv(find_python(index.get("python", "3.12")), work / "venv")
    calls = pack.carry_plan(index, parts_dir, pack.tree_bytes(REPO))
    root = work / "device-root"
    shutil.rmtree(root, ignore_errors=True)
    out = work / "out"
    shutil.rmtree(out, ignore_errors=True)
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1", device.REHEARSAL_TIERS_ENV: ",".join(CUDA_TIERS)}
    for key in ("DVM_HOME", "DVM_VARIANTS_DIR", "VIRTUAL_ENV"):
        env.pop(key, None)  # the GPU machine has none of this machine's state
    env.update({"DVM_GPU_PYTHON": python, "DVM_GPU_ROOT": str(root), "OUT": str(out), "DVM_GPU_REPEATS": str(repeats)})
    script = str(REPO / "scripts" / "gpu-bench.sh")
    code = None
    for number, names in enumerate(calls, 1):  # each call as the device tool makes it: the script, on what it carried
        with tempfile.TemporaryDirectory(prefix=f"dvm-call{number}-") as carried:
            for name in [parts.INDEX, *names]:
                shutil.copyfile(parts_dir / name, Path(carried) / name)
            if number < len(calls):
                stage = subprocess.run(["bash", script, "stage", "--from", carried], env=env, cwd=REPO).returncode
                if stage != 4:
                    raise DvmError(f"call {number} of {len(calls)}: stage exited {stage}, expected 4 (parts still missing)")
            else:
                code = subprocess.run(["bash", script, "all"], env={**env, "DVM_GPU_FROM": carried}, cwd=REPO).returncode
    out.mkdir(parents=True, exist_ok=True)
    if not (out / "summary.json").exists():
        raise DvmError(f"the last call (`gpu-bench.sh all`) exited {code} and wrote no summary.json")
    files = sorted(p for p in out.iterdir())
    problems = [f"{p.name}: not a plain file" for p in files if not p.is_file()]
    problems += [f"{p.name}: {p.stat().st_size / 1e6:.1f} MB, over 16 MiB" for p in files if p.is_file() and p.stat().st_size > MAX_FILE_BYTES]
    if len(files) > MAX_FILES:
        problems.append(f"{len(files)} files, over the {MAX_FILES} that come back")
    summary = json.loads((out / "summary.json").read_text())
    result = {"calls": len(calls), "run_exit": code, "files": [p.name for p in files], "problems": problems,
              "steps": summary["steps"], "seconds": round(time.time() - started, 1),
              "whispercpp_cuda": summary.get("whispercpp_cuda"), "faster_whisper_cuda": summary.get("faster_whisper_cuda")}
    (work / "rehearsal.json").write_text(json.dumps(result, indent=2))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dvm.harness.gpukit.rehearse", description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", type=Path, default=REPO / ".gpu", help="the packed parts (default .gpu; packed first if missing)")
    parser.add_argument("--work", type=Path, default=REPO / ".gpu-rehearsal")
    parser.add_argument("--repeats", type=int, default=1, help="timed repeats per clip in the run (default 1: 2 cores here)")
    args = parser.parse_args(argv)
    try:
        if not (args.parts / parts.INDEX).exists():
            from dvm.harness.gpukit.__main__ import main as gpukit  # noqa: PLC0415 - only when nothing is packed yet

            if gpukit(["pack", "--out", str(args.parts)]) != 0:
                return 1
        result = rehearse(args.parts, args.work, args.repeats)
    except (DvmError, parts.PartsError) as exc:
        return report(exc)
    for step in result["steps"]:
        print(f"  {step['step']}: exit {step['exit']} ({step['seconds']} s)")
    print(f"rehearsal: {result['calls']} call(s), run exit {result['run_exit']}, {len(result['files'])} files back "
          f"({', '.join(result['files'])}), {result['seconds']} s")
    print(f"  whisper.cpp on CUDA: {result['whispercpp_cuda']}")
    print(f"  faster-whisper on CUDA: {result['faster_whisper_cuda']}")
    for problem in result["problems"]:
        print(f"  problem: {problem}")
    return 0 if result["run_exit"] == 0 and not result["problems"] else 1


if __name__ == "__main__":
    sys.exit(main())
