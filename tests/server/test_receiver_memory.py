"""The receiver's state stays bounded whatever arrives: thousands of random SSRCs (packets from
nobody the voice gateway named) and speakers who come and go. Measured with tracemalloc."""

from __future__ import annotations

import random
import tracemalloc

from dvm.server.voice import transport
from dvm.server.voice.receiver import MAX_HELD_SSRCS, MAX_IGNORED_SSRCS, Receiver
from tests.conftest import FIXTURES
from tests.server.dave_helpers import opus_frames

KEY = bytes(range(32))


def _receiver(users: dict[int, str]):
    return Receiver(transport.AES_GCM, KEY, lambda: None, users.get, lambda uid, pcm: None)


def _growth(feed, warmup: int, total: int) -> int:
    """Bytes still allocated after ``total`` calls of ``feed`` beyond those after ``warmup``."""
    tracemalloc.start()
    try:
        for i in range(warmup):
            feed(i)
        before = tracemalloc.get_traced_memory()[0]
        for i in range(warmup, total):
            feed(i)
        return tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


def test_random_ssrcs_are_held_within_bounds():
    rng = random.Random(7)
    cipher = transport.Cipher(transport.AES_GCM, KEY)
    frame = opus_frames(str(FIXTURES / "en-jfk.wav"), seconds=0.2)[5]
    rx = _receiver({})
    packets = [cipher.encrypt(frame, sequence=i & 0xFFFF, timestamp=i * 960, ssrc=rng.getrandbits(32), counter=i)
               for i in range(30_000)]
    grew = _growth(lambda i: rx.handle(packets[i]), 3_000, 30_000)
    stats = rx.stats()
    assert stats["internal_errors"] == 0 and stats["unknown_ssrc_held"] == 30_000
    assert len(rx._held) <= MAX_HELD_SSRCS
    print(f"30,000 packets from random SSRCs: held state grew {grew / 1e3:.1f} kB after the first 3,000")
    assert grew < 200_000, grew


def test_speakers_who_come_and_go_leave_no_state_behind():
    """4,000 speakers each mapped, speaking a few frames and leaving (op 13): decoders are freed."""
    cipher = transport.Cipher(transport.AES_GCM, KEY)
    frames = opus_frames(str(FIXTURES / "en-jfk.wav"), seconds=0.2)
    users: dict[int, str] = {}
    rx = _receiver(users)

    def one_speaker(i: int) -> None:
        ssrc, user = 10_000 + i, str(900_000 + i)
        users[ssrc] = user
        rx.map_ssrc(ssrc, user)
        rx.ignore_ssrc(50_000 + i)  # their camera's SSRC (op 12 video_ssrc)
        for n, frame in enumerate(frames[:3]):
            rx.handle(cipher.encrypt(frame, sequence=n, timestamp=n * 960, ssrc=ssrc, counter=i * 3 + n))
        rx.forget_user(user)
        del users[ssrc]

    grew = _growth(one_speaker, 400, 4_000)
    stats = rx.stats()
    assert stats["internal_errors"] == 0 and stats["opus_decoded"] >= 4_000 * 2
    assert len(rx._streams) == 0 and not stats["per_user"]
    assert len(rx._ignored) <= MAX_IGNORED_SSRCS
    print(f"4,000 speakers in turn: state grew {grew / 1e3:.1f} kB after the first 400")
    assert grew < 300_000, grew
