"""Automation. The README's two commands are `nox -s bench` and `nox -s tests`.

Each session installs what it needs into its own virtual environment under .nox/, so a fresh
machine with Python >= 3.11 needs nothing else.
"""

from __future__ import annotations

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
    """Build whisper.cpp variants from the pywhispercpp sdist: -- native|avx2|openblas|vulkan|cuda ..."""
    _install(session, "base")
    names = session.posargs or ["native"]
    session.run("python", "-m", "dvm.harness.variants", "build", *names)


@nox.session
def fixtures(session: nox.Session) -> None:
    """Regenerate fixtures/audio (needs espeak-ng, flite, festival, sox from the system)."""
    _install(session, "base")
    session.run("python", "-m", "dvm.harness.clipgen", *session.posargs)


@nox.session
def gate(session: nox.Session) -> None:
    """Run the quick matrix and compare it with results/<platform-id>/gate-baseline.json.

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
    if not os.path.exists(baseline):
        session.log(f"no baseline for {platform} ({baseline}); gate skipped. Create one with: nox -s gate -- --update-baseline")
        return
    session.run("dvm", "gate", "--baseline", baseline, run_dir, *session.posargs)
