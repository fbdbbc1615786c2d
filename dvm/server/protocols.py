"""The interfaces the MCP app is typed against: the voice adapter, the transcription pipeline and the store.

The real ones are :class:`dvm.server.voice.discord_client.DiscordVoice`, :class:`dvm.server.pipeline.Pipeline`
and :class:`dvm.server.store.Store`; the tests pass fakes with the same surface.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol, runtime_checkable

from dvm.server.voice.base import EventListener, Sink, VoiceAdapter

__all__ = ["EventListener", "LiveCaptionSource", "SessionItem", "Sink", "TranscriptStore", "TranscriptionPipeline",
           "VoiceAdapter"]


class SessionItem(Protocol):
    """A committed line or an interim hypothesis: anything that names its session."""

    @property
    def session_id(self) -> str: ...


# What the pipeline hands its listeners: a ``Line``/``Interim`` object, or the same as a dict.
LineListener = Callable[[SessionItem | Mapping[str, Any]], None]


class TranscriptionPipeline(Protocol):
    """Speakers' audio in, ordered transcript lines out (committed to the store, then told to ``on_line``)."""

    on_line: LineListener | None

    def start(self) -> None:
        """Start the decode workers."""

    def stop(self, drain: bool = True) -> None:
        """Stop the workers, after transcribing what is queued when ``drain``."""

    def begin(self, session_id: str) -> None:
        """Mark a session's time zero."""

    def feed(self, session_id: str, speaker_id: str, speaker_name: str, pcm: bytes) -> None:
        """Audio of one speaker, in arrival order (any thread)."""

    def flush(self, session_id: str) -> None:
        """Cut every utterance in progress in a session (it is ending)."""

    def stats(self) -> dict:
        """Queue, worker and engine figures; ``engine`` describes the engine in use."""


@runtime_checkable
class LiveCaptionSource(Protocol):
    """A pipeline that also shows interim hypotheses of the utterances in progress (never stored)."""

    on_interim: LineListener | None

    def interims(self, session_id: str) -> list[dict]:
        """The interim lines of a session, as dicts."""


class TranscriptStore(Protocol):
    """Sessions and their lines (SQLite in :class:`dvm.server.store.Store`)."""

    search_engine: str  # "fts5" or "like"

    def start_session(self, guild_id: str | None, guild_name: str | None, channel_id: str | None,
                      channel_name: str | None, engine: dict | None = None) -> str:
        """Open a session; returns its id."""

    def end_session(self, session_id: str) -> dict:
        """Close a session (idempotent); returns its summary."""

    def get_session(self, session_id: str) -> dict:
        """One session's summary; raises ``SessionNotFoundError``."""

    def list_sessions(self) -> list[dict]:
        """Every session's summary, newest first."""

    def get_lines(self, session_id: str, since_id: int = 0) -> list[dict]:
        """A session's lines in speaking order."""

    def search(self, query: str, limit: int = 50) -> list[dict]:
        """Lines containing every word of ``query``, across sessions."""
