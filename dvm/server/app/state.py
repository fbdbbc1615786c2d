"""What the tools share: :class:`AppState`, the open session (opened and closed in one place) and the collaborators."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import anyio
from mcp.server.mcpserver.exceptions import ToolError

from dvm.server.app.live import LiveUpdates
from dvm.server.app.uris import SESSIONS_URI
from dvm.server.protocols import LiveCaptionSource, TranscriptionPipeline, TranscriptStore, VoiceAdapter
from dvm.server.store import SessionNotFoundError

log = logging.getLogger("dvm.server.app")

NOT_CONFIGURED = "Discord not configured: set DISCORD_TOKEN (and DISCORD_USER_ID) and restart the server"


@dataclass(frozen=True)
class Rollover:
    """What :meth:`AppState.rollover` did: the session it ended (and its summary) and the one it opened."""

    ended: str | None = None
    summary: dict | None = None
    opened: str | None = None


class AppState:
    """What the tools share: the open session (if any) and the collaborators."""

    def __init__(self, store: TranscriptStore, pipeline: TranscriptionPipeline, voice: VoiceAdapter | None,
                 harness: dict, updates: LiveUpdates):
        self.store = store
        self.pipeline = pipeline
        self.voice = voice
        self.harness = harness
        self.updates = updates
        self.session_id: str | None = None
        self.lock = anyio.Lock()  # held across a voice call and the session change it causes
        self.profile: dict | None = None

    def sink(self, speaker_id: str, speaker_name: str, pcm: bytes) -> None:
        """Audio from the voice adapter (any thread): fed to the pipeline under the open session."""
        session_id = self.session_id
        if session_id is not None:
            self.pipeline.feed(session_id, speaker_id, speaker_name, pcm)

    def require_voice(self) -> VoiceAdapter:
        if self.voice is None:
            raise ToolError(NOT_CONFIGURED)
        return self.voice

    def rollover(self, where: Mapping[str, Any] | None) -> Rollover:
        """End the open session (if any) and, when ``where`` names a channel, open a session there.

        ``where``: the adapter's join result or voice event (guild/channel ids and names); ``None``
        just ends. Call with :attr:`lock` held; tells ``sessions://list`` subscribers.
        """
        ended, summary, opened = self.session_id, None, None
        if ended is not None:
            self.session_id = None
            summary = self._close(ended)
        if where is not None:
            opened = self.store.start_session(where.get("guild_id"), where.get("guild_name"), where.get("channel_id"),
                                              where.get("channel_name"), self.engine_info())
            self.pipeline.begin(opened)  # the session's time zero
            self.session_id = opened
        self.updates.publish(SESSIONS_URI)
        return Rollover(ended, summary, opened)

    def _close(self, session_id: str) -> dict:
        try:
            self.pipeline.flush(session_id)
        except Exception:
            log.exception("flushing the pipeline for session %s failed", session_id)
        return self.store.end_session(session_id)

    def engine_info(self) -> dict:
        try:
            engine = (self.pipeline.stats() or {}).get("engine") or {}
        except Exception:
            log.exception("pipeline.stats() failed")
            return {}
        return engine if isinstance(engine, dict) else {"engine": str(engine)}

    def session(self, session_id: str) -> dict:
        """One session's summary; an unknown id is a tool error."""
        try:
            return self.store.get_session(session_id)
        except SessionNotFoundError as exc:
            raise ToolError(str(exc)) from None

    def open_session(self) -> dict | None:
        """The open session's summary, or None."""
        session_id = self.session_id
        if session_id is None:
            return None
        try:
            return self.store.get_session(session_id)
        except SessionNotFoundError:
            return None

    def interims(self, session_id: str) -> list[dict]:
        """The interim lines of a session, if the pipeline shows any (a preview: failures are logged, not raised)."""
        if not isinstance(self.pipeline, LiveCaptionSource):
            return []
        try:
            return self.pipeline.interims(session_id)
        except Exception:
            log.exception("pipeline.interims() failed")
            return []
