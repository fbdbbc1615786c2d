"""Shared fixtures: an isolated DVM_HOME per test session, and paths to real data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures" / "audio"


@pytest.fixture(scope="session", autouse=True)
def dvm_home(tmp_path_factory) -> Path:
    """Every test session gets its own DVM_HOME, so nothing leaks from or into the user's."""
    home = tmp_path_factory.mktemp("dvm-home")
    previous = os.environ.get("DVM_HOME")
    os.environ["DVM_HOME"] = str(home)
    yield home
    if previous is None:
        os.environ.pop("DVM_HOME", None)
    else:
        os.environ["DVM_HOME"] = previous


@pytest.fixture(scope="session")
def jfk_path() -> Path:
    """The 11 s JFK sample (committed in fixtures/audio; else from the pywhispercpp sdist)."""
    committed = FIXTURES / "en-jfk.wav"
    if committed.exists():
        return committed
    from dvm.harness.variants import sdist
    from dvm.errors import DvmError

    try:
        return sdist.jfk_wav()
    except DvmError as exc:
        pytest.skip(f"JFK sample unavailable: {exc}")


JFK_TEXT = "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country."
