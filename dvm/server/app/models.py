"""The tools' result models (their output schemas), and a store summary as a :class:`SessionInfo`."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from dvm.server.app.uris import transcript_uri


class Speaker(BaseModel):
    speaker_id: str
    speaker_name: str
    lines: int


class SessionInfo(BaseModel):
    id: str
    guild_id: str | None = None
    guild_name: str | None = None
    channel_id: str | None = None
    channel_name: str | None = None
    started_at: str | None = None
    ended_at: str | None = None
    status: str = Field(description="active | ended | interrupted (the server stopped while it was open)")
    duration_s: float
    speech_end_s: float | None = Field(None, description="end of the last transcribed speech, seconds from the start")
    line_count: int
    speakers: list[Speaker] = []
    engine: dict[str, Any] = {}
    transcript_uri: str = ""


class TranscriptLine(BaseModel):
    id: int
    session_id: str
    speaker_id: str
    speaker_name: str
    start: float = Field(description="seconds since the session started")
    end: float
    text: str
    engine: str
    latency_s: float | None = Field(None, description="end of speech to transcript, seconds")
    status: str = Field(description="ok | dropped (queue full) | failed (transcription error)")
    created_at: str | None = None


class SessionList(BaseModel):
    sessions: list[SessionInfo]


class Transcript(BaseModel):
    session: SessionInfo
    lines: list[TranscriptLine]
    text: str = Field(description="the transcript as readable text, in speaking order")


class ExportResult(BaseModel):
    session_id: str
    format: str
    mime_type: str
    content: str


class SearchHit(TranscriptLine):
    guild_name: str | None = None
    channel_name: str | None = None
    session_started_at: str | None = None


class SearchResults(BaseModel):
    query: str
    search_engine: str = Field(description="fts5 (SQLite full-text index) or like")
    hits: list[SearchHit]


class JoinResult(BaseModel):
    session_id: str
    guild_id: str | None = None
    guild_name: str | None = None
    channel_id: str | None = None
    channel_name: str | None = None
    transcript_uri: str
    previous_session_id: str | None = Field(None, description="the session this join ended, if one was open")


class LeaveResult(BaseModel):
    voice: dict[str, Any]
    session: SessionInfo | None = None


class BotStatus(BaseModel):
    discord: dict[str, Any]
    pipeline: dict[str, Any]
    session: SessionInfo | None = None


def session_info(summary: dict) -> SessionInfo:
    """A store session summary with its transcript URI."""
    return SessionInfo.model_validate({**summary, "transcript_uri": transcript_uri(summary["id"])})
