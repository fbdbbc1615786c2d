"""The GPU machine's side: stage the carried parts call by call, then run the CUDA matrix in one go.

``stage`` needs only the standard library (nothing is installed yet when it runs). ``run`` starts
every dvm step as a child process of the machine's own Python, with the bundle's wheels and this
checkout on ``PYTHONPATH``, so a crash in one step is reported and the rest still runs:

1. models: the carried f16 ggml files registered; q8_0 made from each with the variant's
   ``whisper-quantize``;
2. ``dvm probe --variant cuda``: the GPU seen, and the build proven on it by a test inference;
3. the CUDA matrix (when the probe found CUDA usable; else its reason is printed and the rows are
   skipped): whisper.cpp[cuda] x models x f16/q8_0 x fitted/full context, then the chosen cell
   with 1 and 8 concurrent streams;
4. faster-whisper on CUDA, where it was carried and the probe found it usable;
5. a CPU row on the same machine (the PyPI wheel) for the ratio;
6. one merged table (Markdown, CSV), the plot, and every run folder in ``runs.tar.gz``.

What comes back in ``OUT`` stays within the device tool's limits (8 files, 16 MiB each).
"""

from __future__ import annotations

import collections
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

from dvm import cudalibs
from dvm.harness.gpukit import parts

READY = ".ready"
# The device tool kills a command at 600 s and then returns only what is already in OUT: the run stops
# its steps by this many seconds (a bench interrupted with SIGINT keeps its finished cells) and keeps
# the rest for the tables.
BUDGET_S = 480
REPORT_RESERVE_S = 30
# Set by the rehearsal (no GPU): the CUDA bench still runs, on these tiers, through the CUDA build's CPU
# fallback, so the exact command the GPU will get is exercised; its rows say they ran on the CPU.
REHEARSAL_TIERS_ENV = "DVM_GPUKIT_REHEARSAL_TIERS"


def stage(source: Path, root: Path, python: str | None = None) -> tuple[bool, str]:
    """Keep the parts offered in ``source``; once all are there, unpack and install. (ready, message)."""
    index = parts.read_index(source)
    new, missing = parts.collect(index, source, root / "parts")
    if missing:
        have = len(index["parts"]) - len(missing)
        return False, f"kept {len(new)} new part(s); have {have} of {len(index['parts'])}; still missing: {' '.join(missing)}"
    marker = root / READY
    if marker.exists() and json.loads(marker.read_text()).get("sha256") == index["sha256"]:
        return True, f"bundle ready in {root} (already unpacked)"
    shutil.rmtree(root / "bundle", ignore_errors=True)
    parts.extract(index, root / "parts", root)
    wheels = sorted((root / "bundle" / "wheels").glob("*.whl"))
    if wheels:
        command = [python or sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps", "--no-compile",
                   "--disable-pip-version-check", "--target", str(root / "site"), *map(str, wheels)]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            tail = (result.stderr.strip().splitlines() or ["no output"])[-1]
            return False, f"unpacked, but pip could not install the carried wheels: {tail}"
    marker.write_text(json.dumps({"sha256": index["sha256"], "staged": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}))
    return True, f"bundle ready in {root}: {len(index['parts'])} parts, {len(wheels)} wheels installed"


class Runner:
    """Runs the steps, logs everything to OUT/gpu-bench.log and the terminal, and times each step."""

    def __init__(self, root: Path, out: Path, repo: Path, python: str | None = None, budget_s: float = BUDGET_S):
        self.root, self.out, self.repo = root, out, repo
        self.python = python or sys.executable
        self.bundle = root / "bundle"
        self.meta = json.loads((self.bundle / "bundle.json").read_text())
        self.variant = self.meta["variant"]
        out.mkdir(parents=True, exist_ok=True)
        self.log = open(out / "gpu-bench.log", "a", encoding="utf-8")  # closed in close()
        self.steps: list[dict] = []
        self.started = time.time()
        self.deadline = self.started + budget_s
        self.env = dict(os.environ)
        self.env.update({
            "PYTHONPATH": os.pathsep.join(filter(None, [str(root / "site"), str(repo), os.environ.get("PYTHONPATH")])),
            "DVM_HOME": str(root / "home"),
            "DVM_VARIANTS_DIR": str(self.bundle / "variants"),
            "PYTHONUNBUFFERED": "1",
        })
        # the image's PyTorch carries CUDA 13's runtime and cuBLAS as wheels: the variant's tools need them too
        self.env = cudalibs.child_env(self.env)

    def say(self, line: str) -> None:
        stamp = f"[{time.time() - self.started:6.1f} s]"
        print(f"{stamp} {line}", flush=True)
        self.log.write(f"{stamp} {line}\n")
        self.log.flush()

    def left(self, reserve: float = 0.0) -> float:
        """Seconds of the budget left, less ``reserve``."""
        return self.deadline - reserve - time.time()

    def step(self, name: str, args: list[str], stdout_to: Path | None = None, timeout: float | None = None,
             tail: int | None = None) -> int:
        """One dvm child process; its output goes to the log (and to ``stdout_to`` if given; only its last
        ``tail`` lines if given). Past ``timeout`` it gets SIGINT, as from Ctrl-C (a bench saves its finished
        cells), then SIGKILL 20 s later; its exit is 124 then."""
        self.say(f"{name}: {' '.join(args)}")
        began = time.time()
        sink = open(stdout_to, "w", encoding="utf-8") if stdout_to else None  # closed below
        process = subprocess.Popen([self.python, *args], env=self.env, cwd=self.repo, text=True, start_new_session=True,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT if sink is None else subprocess.PIPE)
        fired = threading.Event()
        watchdog = threading.Timer(timeout, _interrupt, (process, fired)) if timeout is not None else None
        if watchdog is not None:
            watchdog.daemon = True
            watchdog.start()
        try:
            if sink is not None:
                out, err = process.communicate()
                sink.write(out)
                lines = err.splitlines()
            else:
                kept: collections.deque[str] = collections.deque(maxlen=tail)
                for line in process.stdout:
                    if tail is None:
                        self.say(f"  {line.rstrip()}")
                    else:
                        kept.append(line.rstrip())
                lines = list(kept)
                process.wait()
        finally:
            if watchdog is not None:
                watchdog.cancel()
            if sink is not None:
                sink.close()
        for line in lines:
            self.say(f"  {line}")
        code = 124 if fired.is_set() else process.returncode
        if fired.is_set():
            self.say(f"{name}: over its {timeout:.0f} s, interrupted")
        seconds = round(time.time() - began, 1)
        self.steps.append({"step": name, "exit": code, "seconds": seconds})
        self.say(f"{name}: exit {code} in {seconds} s")
        return code

    def close(self) -> None:
        self.log.close()


def _interrupt(process: subprocess.Popen, fired: threading.Event) -> None:
    """SIGINT to the step's process group (as Ctrl-C would), SIGKILL if it is still running 20 s later."""
    fired.set()
    for sig in (signal.SIGINT, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=20)
            return
        except subprocess.TimeoutExpired:
            continue


def _models(runner: Runner) -> list[str]:
    """Register the carried f16 models and make q8_0 copies; returns the model names."""
    names = []
    quantize = runner.bundle / "variants" / runner.variant / "bin" / "whisper-quantize"
    models_dir = runner.root / "home" / "models"
    models_dir.mkdir(parents=True, exist_ok=True)
    for name in runner.meta["models"]:
        source = runner.bundle / "models" / name
        plain = name.removeprefix("ggml-").removesuffix(".bin")
        files = [source]
        q8 = models_dir / f"ggml-{plain}-q8_0.bin"
        if quantize.is_file() and not q8.exists():
            code = runner.step(f"quantize {plain}", ["-c", "import subprocess, sys; sys.exit(subprocess.call(sys.argv[1:]))",
                                                      str(quantize), str(source), str(q8), "q8_0"], tail=2)
            if code == 0 and q8.exists():
                files.append(q8)
        elif q8.exists():
            files.append(q8)
        for path in files:
            runner.step(f"register {path.name}", ["-c", "import sys; from dvm.harness import models; "
                                                        "r = models.register_external(sys.argv[1], sys.argv[2]); print(r.name, r.quant, r.path)",
                                                  str(path), plain])
        names.append(plain)
    return names


def _probe(runner: Runner) -> dict:
    probe_file = runner.out / "probe.json"
    runner.step("probe", ["-m", "dvm.cli", "probe", "--variant", runner.variant, "--json", "--no-cache"], stdout_to=probe_file)
    try:
        return json.loads(probe_file.read_text())
    except (OSError, ValueError):
        return {}


def _device_status(profile: dict, engine: str, device: str) -> tuple[bool, str]:
    found = (profile.get("engines") or {}).get(engine) or {}
    entry = (found.get("devices") or {}).get(device) or {}
    if entry.get("status") == "usable":
        return True, f"usable ({entry.get('backend') or device}, test inference {entry.get('seconds')} s)"
    if not entry and found.get("available") is False:  # the engine itself is missing: its reason says why
        return False, f"unavailable: {found.get('reason') or 'not installed'}"
    return False, f"{entry.get('status') or 'not reported'}: {entry.get('reason') or 'the probe gave no reason'}"


def run(root: Path, out: Path, repo: Path, repeats: int = 3, workers: tuple[int, ...] = (1, 8), python: str | None = None,
        cpu_threads: int | None = None, budget_s: float = BUDGET_S) -> dict:
    """All steps within ``budget_s``; returns the summary written to OUT/summary.json."""
    runner = Runner(root, out, repo, python, budget_s)
    rehearsal = [t for t in os.environ.get(REHEARSAL_TIERS_ENV, "").split(",") if t]
    summary: dict = {"bundle": runner.meta, "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    try:
        names = _models(runner)
        profile = _probe(runner)
        gpus = ((profile.get("accelerators") or {}).get("cuda") or {}).get("devices") or []
        summary["platform_id"] = profile.get("platform_id")
        summary["gpus"] = gpus
        cuda_ok, cuda_why = _device_status(profile, "whispercpp", "cuda")
        fw_ok, fw_why = _device_status(profile, "faster-whisper", "cuda")
        summary["whispercpp_cuda"], summary["faster_whisper_cuda"] = cuda_why, fw_why
        runner.say(f"GPUs: {', '.join(g.get('name', '?') for g in gpus) or 'none seen'}")
        runner.say(f"whisper.cpp [{runner.variant}] on CUDA: {cuda_why}")
        runner.say(f"faster-whisper on CUDA: {fw_why}")
        clips = str(runner.bundle / "clips")
        common = ["--clips", clips, "--repeats", str(repeats), "--models", *names]
        # the CPU row is there for the ratio: one timed pass per clip (after the warm-up) is enough for it
        cpu_common = ["--clips", clips, "--repeats", "1", "--models", *names]
        runs = runner.root / "runs"
        shutil.rmtree(runs, ignore_errors=True)
        if cuda_ok or rehearsal:
            if not cuda_ok:
                runner.say(f"rehearsal: the CUDA bench runs anyway on tiers {' '.join(rehearsal)}, on the CUDA build's CPU fallback")
            runner.step("bench whisper.cpp cuda", ["-m", "dvm.cli", "bench", *common, *(["--tiers", *rehearsal] if not cuda_ok else []),
                                                   "--engines", "whispercpp", "--variants", runner.variant, "--quants", "f16", "q8_0",
                                                   "--audio-ctx", "fit", "full", "--threads", "4",
                                                   "--workers", *map(str, workers), "--out", str(runs / "whispercpp-cuda")],
                        timeout=runner.left(reserve=REPORT_RESERVE_S + 90))  # 90 s: the CPU row after it
        else:
            runner.say("CUDA rows skipped: whisper.cpp's CUDA build is not usable here (above)")
        if fw_ok and runner.left(REPORT_RESERVE_S + 90) > 30:
            runner.step("bench faster-whisper cuda", ["-m", "dvm.cli", "bench", *common, "--engines", "faster-whisper",
                                                      "--device", "cuda", "--quants", "float16", "int8_float16",
                                                      "--threads", "4", "--workers", *map(str, workers),
                                                      "--out", str(runs / "faster-whisper-cuda")],
                        timeout=runner.left(reserve=REPORT_RESERVE_S + 90))
        elif fw_ok:
            runner.say("faster-whisper CUDA rows skipped: the time budget is spent")
        else:
            runner.say("faster-whisper CUDA rows skipped (above)")
        threads = cpu_threads or min(8, os.cpu_count() or 2)
        runner.step("bench cpu reference", ["-m", "dvm.cli", "bench", *cpu_common, "--engines", "whispercpp", "--variants", "wheel",
                                            "--quants", "q8_0", "--audio-ctx", "fit", "--threads", str(threads),
                                            "--no-concurrency", "--out", str(runs / "whispercpp-cpu")],
                    timeout=max(30.0, runner.left(reserve=REPORT_RESERVE_S)))
        run_dirs = sorted(str(p.parent) for p in runs.glob("*/results.json"))
        if run_dirs:
            runner.step("table md", ["-m", "dvm.cli", "report", *run_dirs, "--format", "md"], stdout_to=out / "table.md")
            runner.step("table csv", ["-m", "dvm.cli", "report", *run_dirs, "--format", "csv", "--plot", str(out / "pareto.png")],
                        stdout_to=out / "table.csv")
            with tarfile.open(out / "runs.tar.gz", "w:gz") as tar:
                tar.add(runs, arcname="runs")
        summary["runs"] = [Path(d).name for d in run_dirs]
    finally:
        summary["steps"] = runner.steps
        summary["seconds"] = round(time.time() - runner.started, 1)
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
        runner.say(f"done in {summary['seconds']} s; files in {out}: {' '.join(sorted(p.name for p in out.iterdir()))}")
        runner.close()
    return summary
