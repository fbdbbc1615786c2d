"""Per-stage cost of the receive path, one second of one speaker (50 frames) per round.

Per 20 ms frame = the round's time / 50. `nox -s perf` runs these and compares with the committed
baseline (results/<platform-id>/perf/).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from benchmarks.conftest import BOT, FRAMES, SSRC, USER, planted
from dvm.server.voice import dave, rtp, transport
from dvm.server.voice.opus import OpusStream

KEY = bytes(range(32))
_counter = itertools.count(1)


def _packets(mode: str, payloads: list[bytes]) -> list[bytes]:
    cipher = transport.Cipher(mode, KEY)
    return [cipher.encrypt(p, sequence=i, timestamp=i * 960, ssrc=SSRC, counter=i, extension=b"\x10\x00\x00\x00")
            for i, p in enumerate(payloads)]


def test_rtp_parse(benchmark, opus_second):
    packets = _packets(transport.XCHACHA, opus_second)
    benchmark(lambda: [rtp.parse(p) for p in packets])


@pytest.mark.parametrize("mode", [transport.XCHACHA, transport.AES_GCM])
def test_transport_decrypt(benchmark, opus_second, mode):
    packets = _packets(mode, opus_second)
    headers = [rtp.parse(p) for p in packets]
    cipher = transport.Cipher(mode, KEY)
    out = benchmark(lambda: [cipher.decrypt(p, h) for p, h in zip(packets, headers)])
    assert out == opus_second


def test_dave_decrypt(benchmark, opus_second, dave_group):
    """davey refuses a replayed nonce, so every round gets freshly encrypted frames (not timed)."""
    sender, receiver = dave_group[USER], dave_group[BOT]

    def fresh():
        return ([sender.encrypt_opus(f) for f in opus_second],), {}

    def run(frames):
        return [dave.decrypt(receiver, USER, f) for f in frames]

    outcomes = benchmark.pedantic(run, setup=fresh, rounds=30, iterations=1)
    assert all(o.kind == "decrypted" for o in outcomes)


def test_opus_decode(benchmark, opus_second):
    def fresh():
        return (OpusStream(),), {}

    def run(stream):
        return [stream.feed(i, f) for i, f in enumerate(opus_second)]

    decoded = benchmark.pedantic(run, setup=fresh, rounds=40, iterations=1)
    assert all(d.pcm and len(d.pcm) == 960 * 4 for d in decoded)


def test_resample_48k_stereo_to_16k_mono(benchmark, pcm_second):
    from dvm.server.speech import Resampler as _Resampler

    resample = _Resampler()
    out = benchmark(lambda: [resample(p) for p in pcm_second])
    assert sum(o.size for o in out) == pytest.approx(16000, abs=400)


def test_vad(benchmark, pcm_second):
    from dvm.server.speech import Resampler as _Resampler
    from dvm.server.vad import StreamingVad

    resample = _Resampler()
    mono = [resample(p) for p in pcm_second]
    vad = StreamingVad()
    probs = benchmark(planted("test_vad", lambda: [vad.process(m) for m in mono]))
    assert sum(p.size for p in probs) >= 30


def test_pipeline_feed(benchmark, pcm_second):
    """Everything the pipeline does per frame before transcription: resample, VAD, segmentation."""
    from dvm.server.config import Settings
    from dvm.server.pipeline import Pipeline

    pipeline = Pipeline(lambda: None, None, Settings(silence_timeout_ms=100_000, buffer_duration_s=1e6))
    session = f"bench-{next(_counter)}"
    benchmark(lambda: [pipeline.feed(session, "u", "u", p) for p in pcm_second])


def test_receive_path_end_to_end(benchmark, opus_second, dave_group):
    """One speaker's second through the whole receive path: UDP bytes -> RTP -> transport AEAD ->
    DAVE -> Opus -> sink, then the pipeline's resample + VAD + segmentation."""
    from dvm.server.config import Settings
    from dvm.server.pipeline import Pipeline
    from dvm.server.voice.receiver import Receiver

    sender, bot = dave_group[USER], dave_group[BOT]
    pipeline = Pipeline(lambda: None, None, Settings(silence_timeout_ms=100_000, buffer_duration_s=1e6))
    received = []

    def sink(user_id, pcm):
        received.append(len(pcm))
        pipeline.feed("e2e", user_id, user_id, pcm)

    receiver = Receiver(transport.XCHACHA, KEY, lambda: bot, lambda ssrc: str(USER) if ssrc == SSRC else None, sink)
    seq = itertools.count()

    def fresh():
        frames = [sender.encrypt_opus(f) for f in opus_second]
        cipher = transport.Cipher(transport.XCHACHA, KEY)
        packets = []
        for f in frames:
            i = next(seq)
            packets.append(cipher.encrypt(f, sequence=i % 65536, timestamp=i * 960, ssrc=SSRC, counter=i))
        return (packets,), {}

    benchmark.pedantic(lambda packets: [receiver.handle(p) for p in packets], setup=fresh, rounds=30, iterations=1)
    assert len(received) >= FRAMES * 30 * 0.98
    assert receiver.stats()["dave_decrypted"] >= FRAMES * 30 * 0.98


def test_sqlite_line_commit(benchmark, tmp_path):
    """One transcript line committed (WAL, a transaction per line, as the pipeline does)."""
    from dvm.server.pipeline import Line
    from dvm.server.store import Store

    store = Store(tmp_path / "bench.db")
    session = store.start_session("g", "G", "c", "C", {})
    line = Line(session, "u", "User", 1.0, 2.5, "a line of about the usual length for one utterance", "bench", 0.3)
    benchmark(store.add_line, line)
    assert len(store.get_lines(session)) > 10


def test_queue_handoff(benchmark):
    """Putting an utterance on the pipeline's queue and a worker taking it (condition variable + deque)."""
    import threading
    from collections import deque

    cond, queue = threading.Condition(), deque()
    item = np.zeros(16000, dtype=np.float32)

    def handoff():
        with cond:
            queue.append(item)
            cond.notify()
        with cond:
            return queue.popleft()

    benchmark(handoff)
