"""The serving pipeline on real audio: dialogue fixtures come out as the right speakers' lines, in order."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from dvm.harness import engines, scoring
from dvm.harness.clips import load_clips, read_audio
from dvm.harness.engines import EngineConfig
from dvm.server import loadtest
from dvm.server.config import Settings
from dvm.server.pipeline import Pipeline
from dvm.server.vad import WINDOW, StreamingVad


def clip(clip_id):
    return next(c for c in load_clips() if c.id == clip_id)


def settings(**overrides) -> Settings:
    s = Settings(engine=EngineConfig(engine="whispercpp", model="tiny.en", quant="q8_0", threads=2, audio_ctx="fit"),
                 silence_timeout_ms=600, min_buffer_ms=250, buffer_duration_s=30)
    for k, v in overrides.items():
        setattr(s, k, v)
    return s


class SimClock:
    """Simulated time: audio is fed as fast as possible, the pipeline sees the speakers' own timing."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def play_fast(pipeline, clock, events, session="s", names=None):
    """Discord-like delivery (no frames while a speaker is silent) on the simulated clock."""
    for at, speaker, frame in events:
        clock.now = at
        pipeline.check_silence()
        pipeline.feed(session, speaker, (names or {}).get(speaker, speaker), frame)
    clock.now += 5.0
    pipeline.check_silence()


def run_dialogue(engine_factory, pipeline_settings, clip_id="dialogue-call"):
    """The dialogue's two speakers through a pipeline on the simulated clock; returns (lines, pipeline)."""
    collect, clock = Collector(), SimClock()
    pipeline = Pipeline(engine_factory, None, pipeline_settings, on_line=collect, clock=clock)
    pipeline.start()
    try:
        play_fast(pipeline, clock, loadtest.schedule(loadtest.speaker_tracks(clip(clip_id))))
        pipeline.flush("s")
        pipeline.wait_idle(30)
    finally:
        pipeline.stop()
    return collect, pipeline


class Collector:
    def __init__(self):
        self.lines = []
        self.lock = threading.Lock()

    def __call__(self, line):
        with self.lock:
            self.lines.append(line)


def test_streaming_vad_matches_speech_and_silence():
    speech = read_audio(clip("en-jfk"))
    vad = StreamingVad()
    probs = np.concatenate([vad.process(speech[i:i + 320]) for i in range(0, speech.size, 320)])
    assert probs.size == speech.size // WINDOW
    assert (probs > 0.5).mean() > 0.5  # JFK speaks most of the clip
    silence = StreamingVad()
    quiet = np.concatenate([silence.process(c) for c in np.array_split(read_audio(clip("silence-room")), 50)])
    assert (quiet > 0.5).mean() < 0.02


@pytest.mark.parametrize("clip_id", ["dialogue-call", "dialogue-client"])
def test_dialogue_lines_attributed_in_order(clip_id):
    dialogue = clip(clip_id)
    collect, clock = Collector(), SimClock()
    pipeline = Pipeline(lambda: engines.create(settings().engine), None, settings(), on_line=collect, clock=clock)
    pipeline.start()
    try:
        events = loadtest.schedule(loadtest.speaker_tracks(dialogue))
        play_fast(pipeline, clock, events, "s1", {"A": "user-A", "B": "user-B"})
        pipeline.flush("s1")
        assert pipeline.wait_idle(60)
    finally:
        pipeline.stop()
    lines = collect.lines
    turns = dialogue.turns
    for speaker in ("A", "B"):
        theirs = [l for l in lines if l.speaker_id == speaker]
        expected = [t["text"] for t in turns if t["speaker"] == speaker]
        assert len(theirs) == len(expected), [l.text for l in theirs]
        assert [l.start for l in theirs] == sorted(l.start for l in theirs)
        for line, text in zip(theirs, expected):  # each line is that speaker's turn, not the other's
            assert scoring.score(text, line.text)["wer"] <= 0.5, (line.text, text)
    assert all(l.speaker_name == f"user-{l.speaker_id}" for l in lines)
    everything = " ".join(t["text"] for t in sorted(turns, key=lambda t: t["start"]))
    ordered = " ".join(l.text for l in sorted(lines, key=lambda l: l.start))
    assert scoring.score(everything, ordered)["wer"] <= 0.2


def test_silence_produces_nothing_and_short_blips_are_ignored():
    collect = Collector()
    pipeline = Pipeline(lambda: engines.create(settings().engine), None, settings(), on_line=collect)
    pipeline.start()
    try:
        for frame in loadtest.frames(loadtest.to_discord_pcm(read_audio(clip("silence-room")))):
            pipeline.feed("s", "x", "x", frame)
        pipeline.flush("s")
        pipeline.wait_idle(30)
    finally:
        pipeline.stop()
    assert collect.lines == []


def test_overload_drops_oldest_and_counts_it():
    """One slow worker, a queue of 1: the backlog is cut from its oldest end, every drop is a stored line."""

    class SlowEngine:
        config = EngineConfig()

        def load(self):
            return 0.0

        def info(self):
            return {"engine_version": "slow"}

        def transcribe(self, pcm):
            time.sleep(0.3)
            return type("R", (), {"text": f"{pcm.size}"})()

        def close(self):
            pass

    collect, pipeline = run_dialogue(SlowEngine, settings(queue_size=1))
    stats = pipeline.stats()
    assert stats["dropped"] >= 1
    assert stats["dropped"] + stats["done"] == len(collect.lines) == 4
    assert sum(l.status == "dropped" for l in collect.lines) == stats["dropped"]
    for speaker in ("A", "B"):
        starts = [l.start for l in collect.lines if l.speaker_id == speaker]
        assert starts == sorted(starts)  # per-speaker order even with drops


def test_failed_transcription_is_recorded_and_pipeline_continues():
    class Flaky:
        config = EngineConfig()
        calls = 0

        def load(self):
            return 0.0

        def info(self):
            return {}

        def transcribe(self, pcm):
            Flaky.calls += 1
            if Flaky.calls == 1:
                raise RuntimeError("boom")
            return type("R", (), {"text": "fine"})()

        def close(self):
            pass

    collect, pipeline = run_dialogue(Flaky, settings(live=False))  # the first decode is a final one
    assert [l.status for l in collect.lines].count("failed") == 1
    assert pipeline.stats()["failed"] == 1 and pipeline.stats()["done"] == 3


def test_engine_load_failure_is_reported():
    bad = settings()
    bad.engine = EngineConfig(model="no-such-model")
    pipeline = Pipeline(lambda: engines.create(bad.engine), None, bad)
    with pytest.raises(RuntimeError, match="failed to load"):
        pipeline.start()
