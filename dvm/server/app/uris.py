"""The resource URIs the app serves: one live transcript per session, and the session list."""

from __future__ import annotations

SESSIONS_URI = "sessions://list"
TRANSCRIPT_TEMPLATE = "transcript://{sessionId}"


def transcript_uri(session_id: str) -> str:
    return f"transcript://{session_id}"
