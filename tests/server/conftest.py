"""Fakes for the server tests: a pipeline that turns each fed chunk into a line, and a voice adapter."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from dvm.server.pipeline import Line
from dvm.server.store import Store
from dvm.server.voice.base import VoiceError


class FakePipeline:
    """Each fed chunk is one utterance: its bytes are the text; it lasts 1.5 s, then 0.5 s of silence."""

    def __init__(self, store, on_line=None):
        self.store = store
        self.on_line = on_line
        self.fed: list[tuple[str, str, str, bytes]] = []
        self.flushed: list[str] = []
        self.begun: list[str] = []
        self._clock: dict[str, float] = {}
        self._lock = threading.Lock()
        self.running = False

    def start(self):
        self.running = True

    def stop(self, drain=True):
        self.running = False

    def begin(self, session_id):
        self.begun.append(session_id)

    def feed(self, session_id, speaker_id, speaker_name, pcm):
        with self._lock:
            self.fed.append((session_id, speaker_id, speaker_name, pcm))
            start = self._clock.get(session_id, 0.0)
            self._clock[session_id] = start + 2.0
            text = pcm.decode()
            status = "dropped" if text == "<dropped>" else "ok"
            line = Line(session_id, speaker_id, speaker_name, start, start + 1.5,
                            "" if status != "ok" else text, "fake/tiny", 0.25, status)
            self.store.add_line(line)
        if self.on_line:
            self.on_line(line)

    def flush(self, session_id):
        self.flushed.append(session_id)

    def stats(self):
        return {"queued": 0, "in_flight": 0, "done": len(self.fed), "dropped": 0, "failed": 0, "lag_s": 0.0,
                "workers": 1, "threads": 1, "engine": {"engine": "fake", "model": "tiny"}}


class FakeVoice:
    """Joins instantly; ``speak`` delivers 'audio' through the sink the app handed over (from a thread)."""

    def __init__(self):
        self.sink = None
        self.channel: dict | None = None
        self.follow = False

    async def join_user_channel(self, sink):
        return self._join("1001", "Guild One", "2001", "General", sink)

    async def join_channel(self, guild_id, channel_id, sink):
        if guild_id == "404":
            raise VoiceError(f"guild {guild_id} not found (is the bot in that server?)")
        return self._join(guild_id, "Some Guild", channel_id, "Voice " + channel_id, sink)

    def _join(self, gid, gname, cid, cname, sink):
        self.sink = sink
        self.channel = {"guild_id": gid, "guild_name": gname, "channel_id": cid, "channel_name": cname}
        return dict(self.channel)

    async def leave(self):
        if self.channel is None:
            raise VoiceError("not in a voice channel")
        left, self.channel = self.channel, None
        return {"left": True, **left}

    async def set_follow(self, enabled):
        self.follow = enabled
        return {"follow": enabled}

    def status(self):
        return {"connected": self.channel is not None, "channel": self.channel, "follow": self.follow,
                "packets": {"decrypted": 7}}

    def speak(self, speaker_id: str, name: str, text: str, in_thread: bool = True):
        if in_thread:
            t = threading.Thread(target=self.sink, args=(speaker_id, name, text.encode()))
            t.start()
            t.join()
        else:
            self.sink(speaker_id, name, text.encode())


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture
def store(tmp_path: Path):
    s = Store(tmp_path / "transcripts.db")
    yield s
    s.close()
