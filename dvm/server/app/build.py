"""``build_app``: the MCP server assembled from the store, the pipeline, the voice adapter and the tool groups."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import mcp.types as mt
from mcp.server.mcpserver import MCPServer

import dvm
from dvm.server.app import tools_harness, tools_transcripts, tools_voice
from dvm.server.app.http import add_request_handler
from dvm.server.app.live import LiveUpdates, chain_on_line, watch_interims
from dvm.server.app.state import AppState
from dvm.server.protocols import TranscriptionPipeline, TranscriptStore, VoiceAdapter

INSTRUCTIONS = """\
Transcribes Discord voice channels locally, one line per utterance and speaker.
Join with join_my_voice_channel (the channel DISCORD_USER_ID is in) or join_specific_channel,
read the live transcript with get_transcript or the transcript://{sessionId} resource,
and leave_voice_channel to end the session. list_sessions, search_transcripts and
export_session (json, markdown, srt, vtt) work on past sessions too."""


def build_app(store: TranscriptStore, pipeline: TranscriptionPipeline, voice: VoiceAdapter | None,
              harness: dict | None = None, *, updates: LiveUpdates | None = None,
              name: str = "discord-voice-mcp") -> MCPServer:
    """The MCP server over a store, a pipeline and (optionally) a Discord voice adapter.

    ``harness`` (all optional): ``hardware_profile`` (a dict, or a callable returning one),
    ``benchmark_results`` (a callable returning a dict), ``results_dirs`` (folders searched for
    ``results.json``; default ``./results`` and ``DVM_HOME/results``), ``platform_id``.

    ``updates``: pass the :class:`LiveUpdates` you gave the pipeline as ``on_line``; without it one
    is made and chained onto ``pipeline.on_line``.
    """
    if updates is None:
        updates = LiveUpdates()
        chain_on_line(pipeline, updates)
    watch_interims(pipeline, updates)
    state = AppState(store, pipeline, voice, dict(harness or {}), updates)

    @asynccontextmanager
    async def lifespan(_app: MCPServer) -> AsyncIterator[dict]:
        updates.bind_loop()
        yield {}

    app = MCPServer(name, title="Discord voice transcription (dvm)", version=dvm.__version__,
                    instructions=INSTRUCTIONS, lifespan=lifespan, subscriptions=updates.bus)
    app.dvm_state = state  # for the CLI and tests
    app.dvm_notify_line = updates.line_committed  # an on_line for pipelines built before the app
    add_request_handler(app, "resources/subscribe", mt.SubscribeRequestParams, updates.on_subscribe)
    add_request_handler(app, "resources/unsubscribe", mt.UnsubscribeRequestParams, updates.on_unsubscribe)
    tools_voice.register(app, state)
    tools_transcripts.register(app, state)
    tools_harness.register(app, state)
    tools_transcripts.register_resources(app, state)
    return app
