"""The transcript tools (list, read, export, search) and resources (live transcripts, the session list)."""

from __future__ import annotations

import json
import re
from typing import Annotated

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ResourceNotFoundError, ToolError
from pydantic import Field

from dvm.server import exports
from dvm.server.app.models import ExportResult, SearchHit, SearchResults, SessionList, Transcript, TranscriptLine, session_info
from dvm.server.app.state import AppState
from dvm.server.app.uris import SESSIONS_URI, TRANSCRIPT_TEMPLATE
from dvm.server.store import SessionNotFoundError

SessionId = Annotated[str, Field(description="a session id from list_sessions")]
MAX_QUERY_CHARS = 1000  # a search query longer than this is refused: no one types it, and FTS would match term by term
MAX_QUERY_WORDS = 32


def register(app: MCPServer, state: AppState) -> None:
    """The transcript tools."""
    store = state.store

    @app.tool()
    def list_sessions() -> SessionList:
        """All transcription sessions, newest first: channel, times, status, line count, speakers."""
        return SessionList(sessions=[session_info(s) for s in store.list_sessions()])

    @app.tool()
    def get_transcript(sessionId: SessionId) -> Transcript:  # noqa: N803 - the Go server's names
        """The transcript of one session: every line with speaker and timing, plus readable text."""
        session = state.session(sessionId)
        lines = store.get_lines(sessionId)
        return Transcript(session=session_info(session), lines=[TranscriptLine.model_validate(x) for x in lines],
                          text=exports.to_text(session, lines))

    @app.tool()
    def export_session(
        sessionId: SessionId,  # noqa: N803 - the Go server's parameter names (MCP clients call them so)
        format: Annotated[str, Field(description="json, markdown, srt or vtt")] = "json",  # noqa: A002 - the Go server's parameter name
    ) -> ExportResult:
        """Export a session's transcript as json, markdown, srt or vtt (subtitles with speaker names)."""
        session = state.session(sessionId)
        try:
            fmt, mime, content = exports.export(session, store.get_lines(sessionId), format)
        except ValueError as exc:
            raise ToolError(str(exc)) from None
        return ExportResult(session_id=sessionId, format=fmt, mime_type=mime, content=content)

    @app.tool()
    def search_transcripts(query: Annotated[str, Field(description="words to find (all must occur)")]) -> SearchResults:
        """Find transcript lines containing every word of the query, across all sessions."""
        if not query.strip():
            raise ToolError("the search query is empty")
        if len(query) > MAX_QUERY_CHARS:
            raise ToolError(f"the search query is too long ({len(query)} characters; at most {MAX_QUERY_CHARS})")
        words = len(re.findall(r"\w+", query))
        if words > MAX_QUERY_WORDS:
            raise ToolError(f"the search query has {words} words; at most {MAX_QUERY_WORDS} (every word must occur)")
        hits = store.search(query, limit=50)
        return SearchResults(query=query, search_engine=store.search_engine,
                             hits=[SearchHit.model_validate(h) for h in hits])


def register_resources(app: MCPServer, state: AppState) -> None:
    """``transcript://{sessionId}`` (stored lines plus interims) and ``sessions://list``."""
    store = state.store

    @app.resource(TRANSCRIPT_TEMPLATE, name="transcript", mime_type="text/plain",
                  description="The live transcript of a session; subscribe to hear about new lines.")
    def transcript_resource(sessionId: str) -> str:  # noqa: N803 - the Go server's parameter names (MCP clients call them so)
        try:
            session = store.get_session(sessionId)
        except SessionNotFoundError as exc:
            raise ResourceNotFoundError(str(exc)) from None
        return exports.to_text(session, store.get_lines(sessionId), state.interims(sessionId))

    @app.resource(SESSIONS_URI, name="sessions", mime_type="application/json",
                  description="Every transcription session, newest first.")
    def sessions_resource() -> str:
        return json.dumps({"sessions": store.list_sessions()}, indent=2, ensure_ascii=False)
