"""Fuzz the voice packet path: whatever arrives on the UDP socket, `Receiver.handle` never raises
and every packet is counted exactly once (`check_stats`).

Bounded to a few seconds by default; `DVM_FUZZ_EXAMPLES=N` runs N examples per target instead.
Each target prints `fuzz <name>: <inputs> inputs, 0 crashes` (see them with `pytest -s`).
"""

from __future__ import annotations

import os
import random

import pytest

davey = pytest.importorskip("davey")
hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dvm.server.voice import dave, rtp, transport
from dvm.server.voice.receiver import Receiver, check_stats
from tests.conftest import FIXTURES
from tests.server.dave_helpers import make_group, opus_frames

CHANNEL = 987_654_321_987_654_321
BOT, ALICE, BOB = 1_000_000_000_000_001, 1_000_000_000_000_002, 1_000_000_000_000_003
SSRCS = [1, 2, 3, 0xFFFFFFFF]  # 1 -> Alice, 2 -> Bob, 3 -> "not-a-snowflake", 0xFFFFFFFF unmapped
KEY = bytes(range(32))
EXAMPLES = int(os.environ.get("DVM_FUZZ_EXAMPLES", "400"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

_GROUP = make_group(CHANNEL, [ALICE, BOT, BOB])
_STRANGERS = make_group(CHANNEL, [ALICE, BOT])
_FRAMES = opus_frames(str(FIXTURES / "en-jfk.wav"), seconds=1.0)
TALLY: dict[str, int] = {}


class Target:
    def __init__(self, name: str, mode: str, dave_on: bool) -> None:
        self.name = name
        users = {1: str(ALICE), 2: str(BOB), 3: "not-a-snowflake"}
        self.rx = Receiver(mode, KEY, (lambda: _GROUP[BOT]) if dave_on else (lambda: None), users.get,
                           lambda uid, pcm: None, on_dave_failure_run=lambda uid: None)
        self.cipher = transport.Cipher(mode, KEY)
        self.n = 0

    def feed(self, packet: bytes) -> None:
        self.rx.handle(packet)  # a raise here fails the test: that is the crash we look for
        self.n += 1
        TALLY[self.name] = self.n
        stats = self.rx.stats()
        check_stats(stats)
        assert stats["internal_errors"] == 0 and stats["packets"] == self.n


def _report(target: Target) -> None:
    print(f"\nfuzz {target.name}: {target.n} inputs, 0 crashes; outcomes "
          + ", ".join(f"{k}={v}" for k, v in target.rx.stats().items() if isinstance(v, int) and v)
          + "; dave failed " + str({k: v for k, v in target.rx.stats()["dave_failed"].items() if v}))


MODES = st.sampled_from(transport.MODES)


def test_fuzz_random_bytes():
    target = Target("random-bytes", transport.XCHACHA, True)

    rtp_ish = st.builds(lambda b0, rest: bytes([b0]) + rest, st.integers(0x80, 0xBF), st.binary(max_size=1600))

    @FUZZ
    @given(st.one_of(st.binary(max_size=1600), rtp_ish))
    def run(raw):
        target.feed(raw)

    run()
    _report(target)


def test_fuzz_rtp_like_headers():
    """Version 2 headers with every flag, CSRC count and payload type, random bodies."""
    target = Target("rtp-headers", transport.AES_GCM, True)

    @FUZZ
    @given(
        st.integers(0, 0x3F),
        st.one_of(st.sampled_from([120, 0xF8, 200, 201, 72]), st.integers(0, 255)),
        st.integers(0, 0xFFFF),
        st.sampled_from(SSRCS),
        st.binary(max_size=300),
    )
    def run(flags, b1, seq, ssrc, body):
        raw = bytes([0x80 | flags, b1]) + seq.to_bytes(2, "big") + bytes(4) + ssrc.to_bytes(4, "big") + body
        target.feed(raw)

    run()
    _report(target)


def test_fuzz_mutated_real_packets():
    """Valid DAVE packets, truncated, extended, bit-flipped, or sealed with a wrong key."""
    target = Target("mutated-packets", transport.XCHACHA, True)
    sender = _GROUP[ALICE]
    state = {"seq": 0}

    @FUZZ
    @given(
        st.integers(0, len(_FRAMES) - 1),
        st.sampled_from(["truncate", "extend", "flip", "wrong-key", "intact"]),
        st.integers(0, 2000),
        st.binary(min_size=1, max_size=64),
        st.booleans(),
    )
    def run(i, how, pos, junk, padded):
        state["seq"] += 1
        cipher = transport.Cipher(transport.XCHACHA, os.urandom(32)) if how == "wrong-key" else target.cipher
        pkt = cipher.encrypt(sender.encrypt_opus(_FRAMES[i]), sequence=state["seq"], timestamp=0, ssrc=1,
                             counter=state["seq"], padding=pos % 20 if padded else 0,
                             extension=b"\x10\x00\x00\x00" if padded else None)
        if how == "truncate":
            pkt = pkt[: pos % (len(pkt) + 1)]
        elif how == "extend":
            pkt = pkt + junk * (1 + pos % 20)
        elif how == "flip":
            at = pos % len(pkt)
            pkt = pkt[:at] + bytes([pkt[at] ^ (1 << (pos % 8))]) + pkt[at + 1 :]
        target.feed(pkt)

    run()
    _report(target)
    assert target.rx.stats()["dave_decrypted"] > 0  # the intact ones still come through


def test_fuzz_bad_extension_lengths_and_padding():
    """Authentic packets (right key) whose inner framing lies: extension words, pad counts."""
    target = Target("bad-framing", transport.AES_GCM, False)

    @FUZZ
    @given(
        st.integers(0, 0xFFFF),
        st.booleans(),
        st.booleans(),
        st.integers(0, 15),
        st.binary(max_size=200),
        st.integers(0, 0xFFFF),
    )
    def run(words, ext, pad, csrcs, body, seq):
        header = rtp.build_header(seq, 0, 1, padding=pad, csrcs=(7,) * csrcs,
                                  extension=(0xBEDE, words) if ext else None)
        target.feed(target.cipher.seal(header, body, seq))

    run()
    _report(target)
    assert target.rx.stats()["bad_payload"] > 0


@pytest.mark.parametrize("dave_on", [False, True], ids=["dave-off", "dave-on"])
def test_fuzz_bad_opus_and_dave_frames(dave_on):
    """Authentic transport, hostile media: random Opus, fake DAVE trailers, plain frames in DAVE
    mode, frames encrypted for another user or another group, the silence frame."""
    target = Target(f"media-{'dave' if dave_on else 'plain'}", transport.XCHACHA, dave_on)
    state = {"seq": {s: 0 for s in SSRCS}}

    @FUZZ
    @given(
        st.sampled_from(["random", "fake-dave", "plain", "other-user", "other-group", "silence", "good"]),
        st.binary(min_size=1, max_size=400),
        st.integers(0, 255),
        st.sampled_from(SSRCS),
        st.integers(-3, 3),
    )
    def run(kind, data, supplemental, ssrc, jump):
        frame = _FRAMES[len(data) % len(_FRAMES)]
        if kind == "random":
            payload = data
        elif kind == "fake-dave":
            payload = data + bytes([supplemental]) + dave.MARKER
        elif kind == "plain":
            payload = frame
        elif kind == "other-user":
            payload = _GROUP[BOB].encrypt_opus(frame)
        elif kind == "other-group":
            payload = _STRANGERS[ALICE].encrypt_opus(frame)
        elif kind == "silence":
            payload = dave.SILENCE
        else:
            payload = _GROUP[ALICE].encrypt_opus(frame)
        seq = (state["seq"][ssrc] + jump) & 0xFFFF  # gaps, duplicates, reordering
        state["seq"][ssrc] = seq + 1
        target.feed(target.cipher.encrypt(payload, sequence=seq, timestamp=0, ssrc=ssrc,
                                          counter=random.getrandbits(32)))

    run()
    _report(target)
