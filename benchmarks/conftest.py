"""Real data for the hot-path benchmarks: one second (50 x 20 ms) of a fixture speaker as Discord
delivers it — Opus packets, DAVE-encrypted by a real davey group, then transport-encrypted."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.server.dave_helpers builds the real DAVE group

FRAMES = 50  # one second of 20 ms frames per benchmark round
BOT, USER, CHANNEL, SSRC = 1111, 2222, 987654321, 4242


@pytest.fixture(scope="session", autouse=True)
def _home(tmp_path_factory):
    os.environ["DVM_HOME"] = str(tmp_path_factory.mktemp("home"))


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
