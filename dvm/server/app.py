"""The MCP server: Discord voice tools (the Go server's names), transcripts, search, harness figures.

``build_app(store, pipeline, voice, harness)`` returns an ``MCPServer``; ``run(app, ...)`` serves it on
stdio or streamable HTTP. This is the only module that imports ``mcp``.

Live transcripts: ``transcript://{sessionId}`` is a resource. Each committed line publishes a
resource-updated event two ways, so both client generations hear it:

- 2026-07-28 clients open ``subscriptions/listen`` (the SDK's ``ListenHandler`` over our bus);
- 2025-era clients send ``resources/subscribe`` (served here through the low-level server) and get
  ``notifications/resources/updated`` on their connection's standalone stream.

The pipeline calls ``on_line`` from its worker threads; :class:`LiveUpdates` hops onto the server's
event loop before touching any stream.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import threading
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

import anyio
import mcp.types as mt
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ResourceNotFoundError, ToolError
from mcp.server.subscriptions import InMemorySubscriptionBus, ResourceUpdated, SubscriptionBus
from mcp.server.transport_security import TransportSecuritySettings
from pydantic import BaseModel, Field

from dvm.harness.errors import DvmError
from dvm.server import exports
from dvm.server.store import SessionNotFound, Store
from dvm.server.voice.base import VoiceAdapter, VoiceError

log = logging.getLogger("dvm.server.app")

NOT_CONFIGURED = "Discord not configured: set DISCORD_TOKEN (and DISCORD_USER_ID) and restart the server"
SESSIONS_URI = "sessions://list"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")

INSTRUCTIONS = """\
Transcribes Discord voice channels locally, one line per utterance and speaker.
Join with join_my_voice_channel (the channel DISCORD_USER_ID is in) or join_specific_channel,
read the live transcript with get_transcript or the transcript://{sessionId} resource,
and leave_voice_channel to end the session. list_sessions, search_transcripts and
export_session (json, markdown, srt, vtt) work on past sessions too."""


def transcript_uri(session_id: str) -> str:
    return f"transcript://{session_id}"


# ---------------------------------------------------------------------------- result models


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


def _session_info(summary: dict) -> SessionInfo:
    return SessionInfo.model_validate({**summary, "transcript_uri": transcript_uri(summary["id"])})


# ---------------------------------------------------------------------------- live updates


class LiveUpdates:
    """Fans resource-updated events out to both subscription flows; callable as the pipeline's ``on_line``.

    Thread-safe: ``publish``/``line_committed`` may be called from any thread once the server's
    event loop is known (bound by the server's lifespan and by every subscribe/join). Bursts for
    one URI coalesce into one event (they are level triggers: "re-read this").
    """

    def __init__(self, bus: SubscriptionBus | None = None):
        self.bus: SubscriptionBus = bus if bus is not None else InMemorySubscriptionBus()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._legacy: dict[str, dict[int, Any]] = {}  # uri -> {connection key: ServerSession}
        self._watched: set[int] = set()
        self._pending: set[str] = set()
        self._tasks: set[asyncio.Task] = set()
        self._lock = threading.Lock()

    def bind_loop(self) -> None:
        try:
            self._loop = asyncio.get_running_loop()
        except RuntimeError:
            pass

    def __call__(self, line: Any) -> None:
        self.line_committed(line)

    def line_committed(self, line: Any) -> None:
        session_id = line["session_id"] if isinstance(line, dict) else line.session_id
        self.publish(transcript_uri(session_id))

    def publish(self, uri: str) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._schedule(uri)
            return
        try:
            loop.call_soon_threadsafe(self._schedule, uri)
        except RuntimeError:  # the loop closed between the check and the call
            pass

    def _schedule(self, uri: str) -> None:
        if uri in self._pending:
            return
        self._pending.add(uri)
        task = asyncio.get_running_loop().create_task(self._deliver(uri))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, uri: str) -> None:
        self._pending.discard(uri)
        try:
            await self.bus.publish(ResourceUpdated(uri=uri))
        except Exception:  # a custom bus failing must not stop legacy delivery
            log.exception("publishing %s on the subscription bus failed", uri)
        with self._lock:
            sessions = list(self._legacy.get(uri, {}).values())
        for session in sessions:
            try:
                await session.send_resource_updated(uri)
            except Exception as exc:  # best effort: the client may be gone
                log.debug("resource update for %s not delivered: %r", uri, exc)

    # 2025-era resources/subscribe, served through the low-level server

    def _key(self, session: Any) -> tuple[int, Any]:
        # ServerSession is a per-request proxy; its connection is what outlives the request.
        connection = getattr(session, "_connection", None)
        return (id(connection) if connection is not None else id(session)), connection

    async def on_subscribe(self, ctx: Any, params: mt.SubscribeRequestParams) -> mt.EmptyResult:
        self.bind_loop()
        key, connection = self._key(ctx.session)
        with self._lock:
            self._legacy.setdefault(str(params.uri), {})[key] = ctx.session
            first = key not in self._watched
            self._watched.add(key)
        stack = getattr(connection, "exit_stack", None)
        if first and stack is not None:
            stack.callback(self._forget, key)
        return mt.EmptyResult()

    async def on_unsubscribe(self, ctx: Any, params: mt.UnsubscribeRequestParams) -> mt.EmptyResult:
        key, _ = self._key(ctx.session)
        with self._lock:
            subscribers = self._legacy.get(str(params.uri), {})
            subscribers.pop(key, None)
            if not subscribers:
                self._legacy.pop(str(params.uri), None)
        return mt.EmptyResult()

    def _forget(self, key: int) -> None:
        with self._lock:
            self._watched.discard(key)
            for uri in list(self._legacy):
                self._legacy[uri].pop(key, None)
                if not self._legacy[uri]:
                    del self._legacy[uri]

    def legacy_subscriber_count(self, uri: str) -> int:
        with self._lock:
            return len(self._legacy.get(uri, {}))


def _chain_on_line(pipeline: Any, updates: LiveUpdates) -> None:
    """Hook ``updates`` into a pipeline built before the app: wrap its public ``on_line`` attribute."""
    if not hasattr(pipeline, "on_line"):
        log.warning("the pipeline has no on_line attribute; transcript resources will not push updates")
        return
    previous = pipeline.on_line
    if previous is updates:
        return

    def on_line(line: Any) -> None:
        if previous is not None:
            try:
                previous(line)
            except Exception:
                log.exception("on_line callback failed")
        updates.line_committed(line)

    pipeline.on_line = on_line


# ---------------------------------------------------------------------------- harness helpers


def find_latest_results(dirs: list[Path], platform_id: str | None) -> Path | None:
    """The newest results.json below ``dirs``, preferring those under a ``<platform_id>`` folder."""
    found: list[Path] = []
    for base in dirs:
        if base.is_dir():
            found.extend(base.rglob("results.json"))
    if not found:
        return None
    own = [p for p in found if platform_id and platform_id in p.parts]
    return max(own or found, key=lambda p: (p.stat().st_mtime, str(p)))


def _default_results_dirs() -> list[Path]:
    from dvm.harness.paths import dvm_home  # noqa: PLC0415

    return [Path.cwd() / "results", dvm_home() / "results"]


# ---------------------------------------------------------------------------- the app


class AppState:
    """What the tools share: the open session (if any) and the collaborators."""

    def __init__(self, store: Store, pipeline: Any, voice: VoiceAdapter | None, harness: dict, updates: LiveUpdates):
        self.store = store
        self.pipeline = pipeline
        self.voice = voice
        self.harness = harness
        self.updates = updates
        self.session_id: str | None = None
        self.lock = anyio.Lock()
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

    def close_session(self, session_id: str) -> dict:
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


async def _voice_call(what: str, call: Callable[[], Awaitable[dict]]) -> dict:
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


def _get_session(store: Store, session_id: str) -> dict:
    try:
        return store.get_session(session_id)
    except SessionNotFound as exc:
        raise ToolError(str(exc)) from None


def build_app(store: Store, pipeline: Any, voice: VoiceAdapter | None, harness: dict | None = None,
              *, updates: LiveUpdates | None = None, name: str = "discord-voice-mcp") -> MCPServer:
    """The MCP server over a store, a pipeline and (optionally) a Discord voice adapter.

    ``harness`` (all optional): ``hardware_profile`` (a dict, or a callable returning one),
    ``benchmark_results`` (a callable returning a dict), ``results_dirs`` (folders searched for
    ``results.json``; default ``./results`` and ``DVM_HOME/results``), ``platform_id``.

    ``updates``: pass the :class:`LiveUpdates` you gave the pipeline as ``on_line``; without it one
    is made and chained onto ``pipeline.on_line``.
    """
    harness = dict(harness or {})
    if updates is None:
        updates = LiveUpdates()
        _chain_on_line(pipeline, updates)
    if pipeline is not None and hasattr(pipeline, "on_interim") and pipeline.on_interim is None:
        pipeline.on_interim = updates.line_committed  # an interim line changes the live transcript too
    state = AppState(store, pipeline, voice, harness, updates)

    @asynccontextmanager
    async def lifespan(_app: MCPServer):
        updates.bind_loop()
        yield {}

    import dvm  # noqa: PLC0415

    app = MCPServer(name, title="Discord voice transcription (dvm)", version=dvm.__version__,
                    instructions=INSTRUCTIONS, lifespan=lifespan, subscriptions=updates.bus)
    app.dvm_state = state  # for the CLI and tests
    app.dvm_notify_line = updates.line_committed  # an on_line for pipelines built before the app
    low = app._lowlevel_server  # noqa: SLF001 - MCPServer serves resources/subscribe only through it
    low.add_request_handler("resources/subscribe", mt.SubscribeRequestParams, updates.on_subscribe)
    low.add_request_handler("resources/unsubscribe", mt.UnsubscribeRequestParams, updates.on_unsubscribe)

    # ------------------------------------------------------------------ Discord tools

    async def join(how: Callable[[Callable[[str, str, bytes], None]], Awaitable[dict]], what: str) -> JoinResult:
        updates.bind_loop()
        async with state.lock:
            info = await _voice_call(what, lambda: how(state.sink))
            previous = state.session_id
            if previous is not None:
                state.session_id = None
                state.close_session(previous)
            session_id = store.start_session(info.get("guild_id"), info.get("guild_name"), info.get("channel_id"),
                                             info.get("channel_name"), state.engine_info())
            begin = getattr(pipeline, "begin", None)  # marks the session's time zero, if the pipeline has one
            if callable(begin):
                begin(session_id)
            state.session_id = session_id
        updates.publish(SESSIONS_URI)
        return JoinResult(session_id=session_id, transcript_uri=transcript_uri(session_id),
                          previous_session_id=previous,
                          **{k: None if info.get(k) is None else str(info[k])
                             for k in ("guild_id", "guild_name", "channel_id", "channel_name")})

    async def voice_event(event: dict) -> None:
        """The adapter joined, moved or left by itself (follow mode): sessions follow the bot."""
        kind = event.get("event")
        if kind not in ("left", "moved", "joined"):
            return
        async with state.lock:
            previous = state.session_id
            if previous is not None:
                state.session_id = None
                state.close_session(previous)
            if kind in ("moved", "joined"):
                session_id = store.start_session(event.get("guild_id"), event.get("guild_name"), event.get("channel_id"),
                                                 event.get("channel_name"), state.engine_info())
                begin = getattr(pipeline, "begin", None)
                if callable(begin):
                    begin(session_id)
                state.session_id = session_id
        updates.publish(SESSIONS_URI)

    def on_voice_event(event: dict) -> None:  # called on the adapter's thread
        loop = updates._loop  # noqa: SLF001 - bound by the server's lifespan / the first join
        if loop is not None and not loop.is_closed():
            asyncio.run_coroutine_threadsafe(voice_event(event), loop)

    if voice is not None and hasattr(voice, "on_event"):
        voice.on_event = on_voice_event

    @app.tool()
    async def join_my_voice_channel() -> JoinResult:
        """Join the voice channel the configured user (DISCORD_USER_ID) is in and start transcribing.

        Starts a new session; its live transcript is at transcript://{sessionId}."""
        voice = state.require_voice()
        return await join(voice.join_user_channel, "joining your voice channel")

    @app.tool()
    async def join_specific_channel(
        guildId: Annotated[str, Field(description="the Discord server (guild) id")],  # noqa: N803 - the Go server's names
        channelId: Annotated[str, Field(description="the voice channel id")],  # noqa: N803
    ) -> JoinResult:
        """Join a given voice channel (guild and channel ids) and start transcribing."""
        voice = state.require_voice()
        return await join(lambda sink: voice.join_channel(guildId, channelId, sink), "joining the channel")

    @app.tool()
    async def follow_me(enabled: Annotated[bool, Field(description="true to follow, false to stop")]) -> dict[str, Any]:
        """Follow the configured user between voice channels (and leave when they leave), or stop following."""
        voice = state.require_voice()
        return await _voice_call("changing follow mode", lambda: voice.set_follow(enabled))

    @app.tool()
    async def leave_voice_channel() -> LeaveResult:
        """Leave the voice channel and end the transcription session."""
        voice = state.require_voice()
        async with state.lock:
            session_id = state.session_id
            try:
                result = await _voice_call("leaving the voice channel", voice.leave)
            except ToolError:
                if session_id is None:
                    raise
                result = {"left": False, "note": "the voice connection was already gone"}
            summary = None
            if session_id is not None:
                state.session_id = None
                summary = state.close_session(session_id)
        updates.publish(SESSIONS_URI)
        return LeaveResult(voice=result, session=_session_info(summary) if summary else None)

    @app.tool()
    def get_bot_status() -> BotStatus:
        """Connection state, speakers, receive/DAVE counters, transcription queue and the open session."""
        if state.voice is None:
            discord = {"configured": False, "connected": False, "message": NOT_CONFIGURED}
        else:
            try:
                discord = {"configured": True, **dict(state.voice.status() or {})}
            except Exception as exc:
                log.exception("voice.status() failed")
                discord = {"configured": True, "error": f"{type(exc).__name__}: {exc}"}
        try:
            stats = dict(pipeline.stats() or {})
        except Exception as exc:
            log.exception("pipeline.stats() failed")
            stats = {"error": f"{type(exc).__name__}: {exc}"}
        session = None
        if state.session_id is not None:
            try:
                session = _session_info(store.get_session(state.session_id))
            except SessionNotFound:
                session = None
        return BotStatus(discord=discord, pipeline=stats, session=session)

    # ------------------------------------------------------------------ transcripts

    @app.tool()
    def list_sessions() -> SessionList:
        """All transcription sessions, newest first: channel, times, status, line count, speakers."""
        return SessionList(sessions=[_session_info(s) for s in store.list_sessions()])

    @app.tool()
    def get_transcript(sessionId: Annotated[str, Field(description="a session id from list_sessions")]) -> Transcript:  # noqa: N803
        """The transcript of one session: every line with speaker and timing, plus readable text."""
        session = _get_session(store, sessionId)
        lines = store.get_lines(sessionId)
        return Transcript(session=_session_info(session), lines=[TranscriptLine.model_validate(x) for x in lines],
                          text=exports.to_text(session, lines))

    @app.tool()
    def export_session(
        sessionId: Annotated[str, Field(description="a session id from list_sessions")],  # noqa: N803
        format: Annotated[str, Field(description="json, markdown, srt or vtt")] = "json",  # noqa: A002
    ) -> ExportResult:
        """Export a session's transcript as json, markdown, srt or vtt (subtitles with speaker names)."""
        session = _get_session(store, sessionId)
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
        hits = store.search(query, limit=50)
        return SearchResults(query=query, search_engine=store.search_engine,
                             hits=[SearchHit.model_validate(h) for h in hits])

    # ------------------------------------------------------------------ harness

    @app.tool()
    async def get_hardware_profile() -> dict[str, Any]:
        """This machine's profile: OS, CPU and SIMD, BLAS, GPUs and which engines/devices are usable."""
        if state.profile is None:
            given = harness.get("hardware_profile")
            if isinstance(given, dict):
                state.profile = given
            else:
                if given is None:
                    from dvm.harness import probe  # noqa: PLC0415

                    def given():
                        return probe.collect(check_engines=False)
                try:
                    state.profile = await anyio.to_thread.run_sync(given)
                except Exception as exc:
                    log.exception("hardware probe failed")
                    raise ToolError(f"the hardware probe failed: {type(exc).__name__}: {exc}") from None
        return state.profile

    @app.tool()
    async def get_benchmark_results() -> dict[str, Any]:
        """The latest benchmark run for this platform: RTF and WER per engine/model/threads cell."""
        given = harness.get("benchmark_results")
        if callable(given):
            return dict(await anyio.to_thread.run_sync(given))
        return await anyio.to_thread.run_sync(_latest_benchmark, state)

    # ------------------------------------------------------------------ resources

    @app.resource("transcript://{sessionId}", name="transcript", mime_type="text/plain",
                  description="The live transcript of a session; subscribe to hear about new lines.")
    def transcript_resource(sessionId: str) -> str:  # noqa: N803
        try:
            session = store.get_session(sessionId)
        except SessionNotFound as exc:
            raise ResourceNotFoundError(str(exc)) from None
        interims = []
        if pipeline is not None and hasattr(pipeline, "interims"):
            try:
                interims = pipeline.interims(sessionId)
            except Exception:  # noqa: BLE001 - interim lines are a preview; the stored ones still show
                log.exception("pipeline.interims() failed")
        return exports.to_text(session, store.get_lines(sessionId), interims)

    @app.resource(SESSIONS_URI, name="sessions", mime_type="application/json",
                  description="Every transcription session, newest first.")
    def sessions_resource() -> str:
        return json.dumps({"sessions": store.list_sessions()}, indent=2, ensure_ascii=False)

    return app


def _latest_benchmark(state: AppState) -> dict[str, Any]:
    from dvm.harness import report  # noqa: PLC0415

    dirs = [Path(d) for d in state.harness.get("results_dirs") or _default_results_dirs()]
    platform_id = state.harness.get("platform_id") or (state.profile or {}).get("platform_id")
    if platform_id is None:
        try:
            from dvm.harness import probe  # noqa: PLC0415

            platform_id = probe.platform_id()
        except Exception:
            platform_id = None
    path = find_latest_results(dirs, platform_id)
    if path is None:
        raise ToolError(f"no benchmark results found under {', '.join(map(str, dirs))}; run `dvm bench` first")
    try:
        run = report.load_run(path)
    except DvmError as exc:
        raise ToolError(str(exc)) from None
    return {
        "platform_id": run.get("platform_id"),
        "this_platform": platform_id,
        "path": str(path),
        "created_at": run.get("created_at") or run.get("started_at"),
        "rows": report.rows([run]),
    }


# ---------------------------------------------------------------------------- serving


class UnsafeBindError(DvmError, ValueError):
    """An HTTP bind that would expose the server without protection (the CLI prints it as one line)."""


class StaticTokenVerifier:
    """Accepts exactly one bearer token (compared in constant time)."""

    def __init__(self, token: str):
        if not token:
            raise ValueError("an empty token would let anyone in")
        self._token = token.encode()

    async def verify_token(self, token: str) -> AccessToken | None:
        if hmac.compare_digest(token.encode(), self._token):
            return AccessToken(token="<redacted>", client_id="dvm-client", scopes=[])
        return None


def http_app(app: MCPServer, *, host: str = "127.0.0.1", token: str | None = None,
             allowed_hosts: list[str] | None = None, allowed_origins: list[str] | None = None,
             path: str = "/mcp"):
    """The streamable-HTTP Starlette app, with DNS-rebinding protection and optional bearer auth.

    Loopback hosts allow loopback Host/Origin headers (plus any given). Any other host needs a
    token and an explicit ``allowed_hosts`` list (e.g. ``["myhost:8000"]``): the SDK would
    otherwise turn the protection off.
    """
    loopback = host in LOOPBACK_HOSTS
    if not loopback:
        if not token:
            raise UnsafeBindError(f"serving on {host} (not loopback) needs a token: set one so requests "
                             "must carry 'Authorization: Bearer <token>'")
        if not allowed_hosts:
            raise UnsafeBindError(f"serving on {host} (not loopback) needs the allowed Host headers set "
                             "explicitly (e.g. 'myhost.lan:8000')")
    hosts = list(allowed_hosts or [])
    origins = list(allowed_origins or [])
    if loopback:
        hosts += ["127.0.0.1:*", "localhost:*", "[::1]:*"]
        origins += ["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"]
    security = TransportSecuritySettings(enable_dns_rebinding_protection=True, allowed_hosts=hosts,
                                         allowed_origins=origins)
    auth = verifier = None
    if token:
        verifier = StaticTokenVerifier(token)
        # issuer_url is required by the model but only used when this server issues tokens itself.
        auth = AuthSettings(issuer_url="http://localhost", resource_server_url=None)
    low = app._lowlevel_server  # noqa: SLF001 - the public wrapper reads auth only from the constructor
    return low.streamable_http_app(
        streamable_http_path=path, transport_security=security, host=host, auth=auth, token_verifier=verifier,
        custom_starlette_routes=list(getattr(app, "_custom_starlette_routes", [])), debug=app.settings.debug)


def run(app: MCPServer, transport: str = "stdio", host: str = "127.0.0.1", port: int = 8000,
        token: str | None = None, *, allowed_hosts: list[str] | None = None,
        allowed_origins: list[str] | None = None, path: str = "/mcp", log_level: str = "info") -> None:
    """Serve ``app`` until stopped: ``stdio`` (default) or ``http`` (streamable HTTP at ``path``)."""
    if transport == "stdio":
        app.run("stdio")
        return
    if transport not in ("http", "streamable-http"):
        raise DvmError(f"unknown transport {transport!r}; use stdio or http")
    starlette_app = http_app(app, host=host, token=token, allowed_hosts=allowed_hosts,
                             allowed_origins=allowed_origins, path=path)
    import uvicorn  # noqa: PLC0415

    server = uvicorn.Server(uvicorn.Config(starlette_app, host=host, port=port, log_level=log_level.lower()))
    server.run()
