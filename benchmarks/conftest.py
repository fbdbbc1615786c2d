"""Real data for the hot-path benchmarks: one second (50 x 20 ms) of a fixture speaker as Discord
delivers it — Opus packets, DAVE-encrypted by a real davey group, then transport-encrypted."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.server.dave_helpers builds the real DAVE group

PLANT_ENV = "DVM_PERF_PLANT"  # e.g. "test_vad=1.3": that stage spins 30 % longer (proves the budget bites)
FRAMES = 50  # one second of 20 ms frames per benchmark round
BOT, USER, CHANNEL, SSRC = 1111, 2222, 987654321, 4242


@pytest.fixture(scope="session", autouse=True)
def _home(tmp_path_factory):
    os.environ["DVM_HOME"] = str(tmp_path_factory.mktemp("home"))


def planted(stage: str, fn):
    """``fn``, or, when DVM_PERF_PLANT names ``stage``, ``fn`` followed by a CPU spin of (factor - 1)
    times its own duration: a slowdown planted on purpose, for showing that the budget catches it."""
    spec = dict(item.split("=", 1) for item in os.environ.get(PLANT_ENV, "").split(",") if "=" in item)
    if stage not in spec:
        return fn
    extra = float(spec[stage]) - 1.0

    def slowed():
        began = time.perf_counter()
        out = fn()
        until = time.perf_counter() + (time.perf_counter() - began) * extra
        while time.perf_counter() < until:
            pass
        return out

    return slowed


_LOAD: dict = {}  # one monitor per benchmark session (dvm.harness.bench.load, counting this process as ours)


def pytest_sessionstart(session):
    from dvm.harness.bench.load import LoadMonitor

    _LOAD["session"] = LoadMonitor(include_self=True)
    _LOAD["session"].start()


def pytest_benchmark_update_machine_info(config, machine_info):
    """Recorded in the run's JSON: how busy the machine was, and any planted slowdown."""
    machine_info["dvm_load"] = {"foreign_cores": _LOAD["session"].stop().get("foreign_cores") if _LOAD else None,
                                "cpu_count": os.cpu_count(), "planted": os.environ.get(PLANT_ENV) or None}


@pytest.fixture(scope="session")
def opus_second() -> list[bytes]:
    from tests.server.dave_helpers import opus_frames

    frames = opus_frames(str(ROOT / "fixtures" / "audio" / "en-jfk.wav"), seconds=3.0)
    return frames[50:50 + FRAMES]  # a second of speech, past the encoder's start


@pytest.fixture(scope="session")
def dave_group():
    from tests.server.dave_helpers import make_group

    return make_group(CHANNEL, [BOT, USER])


@pytest.fixture(scope="session")
def pcm_second(opus_second) -> list[bytes]:
    from dvm.server.voice.opus import OpusStream

    stream = OpusStream()
    return [stream.feed(i, frame).pcm for i, frame in enumerate(opus_second)]
