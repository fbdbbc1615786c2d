"""The Discord voice tools (the Go server's names): join, follow, leave, status; and sessions that follow the bot."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import Field

from dvm.server.app.models import BotStatus, JoinResult, LeaveResult, session_info
from dvm.server.app.state import NOT_CONFIGURED, AppState
from dvm.server.app.uris import transcript_uri
from dvm.server.protocols import Sink
from dvm.server.voice.base import VoiceError

log = logging.getLogger("dvm.server.app")

PLACE_KEYS = ("guild_id", "guild_name", "channel_id", "channel_name")


async def voice_call(what: str, call: Callable[[], Awaitable[dict]]) -> dict:
    """Run one adapter call; VoiceError -> its message as a tool error, anything else -> logged + short error."""
    try:
        result = await call()
    except VoiceError as exc:
        raise ToolError(str(exc)) from None
    except ToolError:
        raise
    except Exception as exc:
        log.exception("%s failed", what)
        raise ToolError(f"{what} failed: {type(exc).__name__}: {exc}") from None
    return dict(result or {})


async def join(state: AppState, how: Callable[[Sink], Awaitable[dict]], what: str) -> JoinResult:
    """Join through the adapter, then end the open session (if any) and start one in the new channel."""
    state.updates.bind_loop()
    async with state.lock:
        info = await voice_call(what, lambda: how(state.sink))
        change = state.rollover(info)
    assert change.opened is not None
    return JoinResult(session_id=change.opened, transcript_uri=transcript_uri(change.opened),
                      previous_session_id=change.ended,
                      **{k: None if info.get(k) is None else str(info[k]) for k in PLACE_KEYS})


async def leave(state: AppState) -> LeaveResult:
    """Leave through the adapter and end the open session; a lost connection still ends it."""
    voice = state.require_voice()
    async with state.lock:
        try:
            result = await voice_call("leaving the voice channel", voice.leave)
        except ToolError:
            if state.session_id is None:
                raise
            result = {"left": False, "note": "the voice connection was already gone"}
        change = state.rollover(None)
    return LeaveResult(voice=result, session=session_info(change.summary) if change.summary else None)


async def voice_event(state: AppState, event: dict) -> None:
    """The adapter joined, moved or left by itself (follow mode): sessions follow the bot."""
    kind = event.get("event")
    if kind not in ("left", "moved", "joined"):
        return
    async with state.lock:
        state.rollover(event if kind in ("moved", "joined") else None)


def bot_status(state: AppState) -> BotStatus:
    if state.voice is None:
        discord = {"configured": False, "connected": False, "message": NOT_CONFIGURED}
    else:
        try:
            discord = {"configured": True, **dict(state.voice.status() or {})}
        except Exception as exc:
            log.exception("voice.status() failed")
            discord = {"configured": True, "error": f"{type(exc).__name__}: {exc}"}
    try:
        stats = dict(state.pipeline.stats() or {})
    except Exception as exc:
        log.exception("pipeline.stats() failed")
        stats = {"error": f"{type(exc).__name__}: {exc}"}
    summary = state.open_session()
    return BotStatus(discord=discord, pipeline=stats, session=session_info(summary) if summary else None)


def register(app: MCPServer, state: AppState) -> None:
    """The voice tools, and the adapter's own joins/moves/leaves rolling sessions over."""
    if state.voice is not None:
        state.voice.on_event = lambda event: state.updates.submit(voice_event(state, event))  # the adapter's thread

    @app.tool()
    async def join_my_voice_channel() -> JoinResult:
        """Join the voice channel the configured user (DISCORD_USER_ID) is in and start transcribing.

        Starts a new session; its live transcript is at transcript://{sessionId}."""
        voice = state.require_voice()
        return await join(state, voice.join_user_channel, "joining your voice channel")

    @app.tool()
    async def join_specific_channel(
        guildId: Annotated[str, Field(description="the Discord server (guild) id")],  # noqa: N803 - the Go server's names
        channelId: Annotated[str, Field(description="the voice channel id")],  # noqa: N803 - the Go server's parameter names (MCP clients call them so)
    ) -> JoinResult:
        """Join a given voice channel (guild and channel ids) and start transcribing."""
        voice = state.require_voice()
        return await join(state, lambda sink: voice.join_channel(guildId, channelId, sink), "joining the channel")

    @app.tool()
    async def follow_me(enabled: Annotated[bool, Field(description="true to follow, false to stop")]) -> dict[str, Any]:
        """Follow the configured user between voice channels (and leave when they leave), or stop following."""
        voice = state.require_voice()
        return await voice_call("changing follow mode", lambda: voice.set_follow(enabled))

    @app.tool()
    async def leave_voice_channel() -> LeaveResult:
        """Leave the voice channel and end the transcription session."""
        return await leave(state)

    @app.tool()
    def get_bot_status() -> BotStatus:
        """Connection state, speakers, receive/DAVE counters, transcription queue and the open session."""
        return bot_status(state)
