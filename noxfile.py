"""Automation: `nox -s tests` (the test suite), `nox -s bench` (the matrix on this machine), ...

Each session installs what it needs into its own virtual environment, so these are the only
set-up commands a fresh machine needs (see README).
"""

from __future__ import annotations

import nox

nox.options.default_venv_backend = "uv|virtualenv"
nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["tests"]

PYTHON = None  # the interpreter nox runs under (>= 3.11)


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """Run the whole test suite (slow, model-backed tests included). Pass pytest args after --."""
    session.install("-e", ".[test,base]")
    args = session.posargs or ["-q"]
    session.run("pytest", *args)
