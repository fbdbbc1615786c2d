"""The Discord voice adapter: discord.py 2.7 glue (the only module that imports ``discord``).

discord.py connects, negotiates the transport mode and DAVE, and keeps the connections up; it
has no voice receive. We hook three of its voice internals (pinned to the 2.7 series):

- ``VoiceConnectionState.add_socket_listener``: every UDP datagram of the voice socket;
- the voice websocket hook: every JSON voice event after discord.py has handled it (op 4
  session description -> mode + secret key, op 5 speaking -> SSRC of a user, op 11/13/18/20
  clients connecting and leaving, DAVE transitions);
- ``VoiceConnectionState.dave_session``: the ``davey.DaveSession`` discord.py keeps in step with
  the MLS group, which our :class:`~dvm.server.voice.receiver.Receiver` decrypts with.

The client runs on its own event loop in a daemon thread, started on the first join; the MCP
app awaits the adapter's coroutines on its own loop and they hop over with
``run_coroutine_threadsafe``. ``DISCORD_API_BASE`` / ``DISCORD_GATEWAY_URL`` point discord.py at
another Discord-compatible endpoint; TLS trust follows ``SSL_CERT_FILE`` (read when the client
starts).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
import os
import re
import select
import ssl
import struct
import threading
import time
from typing import Any, Callable

import aiohttp
import discord
import discord.gateway
import discord.http
import yarl
from discord.voice_state import SocketReader, VoiceConnectionState

from dvm.server.voice.base import Sink, VoiceError
from dvm.server.voice.receiver import Receiver

if not discord.__version__.startswith("2.7."):  # receive hooks into 2.7's voice internals
    raise ImportError(f"dvm's Discord adapter needs discord.py 2.7.x, found {discord.__version__}")

log = logging.getLogger("dvm.server.voice")

READY_TIMEOUT_S = 60.0
CONNECT_TIMEOUT_S = 30.0
REBUILD_MIN_INTERVAL_S = 10.0  # at most one op 31 (group rebuild request) per this many seconds
WATCHDOG_INTERVAL_S = 2.0


def _api_base(value: str) -> str:
    value = value.rstrip("/")
    if not re.search(r"/v\d+$", value):
        value += "/v10"
    return value


class _SocketReader(SocketReader):
    """discord.py's UDP reader thread with a short ``select`` timeout.

    Its own waits 30 s on the socket; once a listener is registered (ours, for receive) a voice
    reconnect closes that socket under the waiting ``select``, which Linux does not wake, so IP
    discovery on the new socket sat behind it for up to 30 s.
    """

    def _do_run(self) -> None:
        while not self._end.is_set():
            if not self._running.is_set():
                self._running.wait()
                continue
            sock = self.state.socket
            try:
                readable, _, _ = select.select([sock], [], [], 0.25)
            except (ValueError, TypeError, OSError):  # closed or not made yet
                time.sleep(0.05)
                continue
            if not readable:
                continue
            try:
                data = sock.recv(2048)
            except OSError:
                continue
            for callback in list(self._callbacks):
                try:
                    callback(data)
                except Exception:  # noqa: BLE001
                    log.exception("voice socket listener %r failed", callback)


class _ConnectionState(VoiceConnectionState):
    def __init__(self, voice_client: discord.VoiceClient, *, hook: Any = None):
        super().__init__(voice_client, hook=hook)
        original = self._socket_reader
        self._socket_reader = _SocketReader(self)
        self._socket_reader.start()
        for _ in range(5):  # stop discord.py's (it may still be starting, which would undo one stop())
            original.stop()
            original.join(0.1)
            if not original.is_alive():
                break


class _VoiceClient(discord.VoiceClient):
    """discord.py's voice client, plus the AES-GCM transport mode and a websocket hook for receive."""

    # Both "rtpsize" AEAD modes; the voice server's order decides (Discord lists AES-GCM first).
    supported_modes = ("aead_aes256_gcm_rtpsize", "aead_xchacha20_poly1305_rtpsize")

    def create_connection_state(self) -> VoiceConnectionState:
        return _ConnectionState(self, hook=self._ws_hook)

    async def _ws_hook(self, _ws: Any, msg: dict) -> None:
        adapter = getattr(self.client, "dvm_adapter", None)
        if adapter is not None:
            adapter._on_voice_event(self, msg)  # noqa: SLF001

    def _encrypt_aead_aes256_gcm_rtpsize(self, header: bytes, data: bytes) -> bytes:
        # Only used if someone plays audio through this client (dvm never does); mirrors the xchacha one.
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        nonce = struct.pack(">I", self._incr_nonce) + bytes(8)
        self.checked_add("_incr_nonce", 1, 4294967295)
        return header + AESGCM(bytes(self.secret_key)).encrypt(nonce, bytes(data), bytes(header)) + nonce[:4]


class _Client(discord.Client):
    def __init__(self, adapter: DiscordVoice, **kwargs: Any):
        super().__init__(**kwargs)
        self.dvm_adapter = adapter

    async def setup_hook(self) -> None:
        await self.dvm_adapter._setup_hook(self)  # noqa: SLF001

    async def on_ready(self) -> None:
        self.dvm_adapter._on_ready()  # noqa: SLF001

    async def on_resumed(self) -> None:
        self.dvm_adapter.counters["gateway_resumes"] += 1

    async def on_disconnect(self) -> None:
        self.dvm_adapter.counters["gateway_disconnects"] += 1

    async def on_voice_state_update(self, member: discord.Member, before: discord.VoiceState,
                                    after: discord.VoiceState) -> None:
        await self.dvm_adapter._on_voice_state_update(member, before, after)  # noqa: SLF001


class DiscordVoice:
    """A :class:`~dvm.server.voice.base.VoiceAdapter` on discord.py; one voice connection at a time."""

    def __init__(self, settings: Any, env: dict | None = None):
        env = dict(os.environ if env is None else env)
        self.token: str | None = getattr(settings, "discord_token", None)
        self.user_id: str | None = getattr(settings, "discord_user_id", None)
        self.api_base = getattr(settings, "discord_api_base", None) or env.get("DISCORD_API_BASE") or None
        self.gateway_url = getattr(settings, "discord_gateway_url", None) or env.get("DISCORD_GATEWAY_URL") or None
        # Called (on the client's thread) when the adapter leaves, moves or joins on its own (follow
        # mode): {"event": "left" | "moved" | "joined", guild/channel ids and names}. The app may end,
        # relabel or start a session.
        self.on_event: Callable[[dict], None] | None = None
        self.counters: collections.Counter = collections.Counter()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._client: _Client | None = None
        self._ready: concurrent.futures.Future | None = None
        self._start_lock = threading.Lock()
        self._vc: _VoiceClient | None = None
        self._target: discord.abc.Snowflake | None = None  # the channel we mean to be in
        self._sink: Sink | None = None
        self._follow = False
        self._receiver: Receiver | None = None  # one per join; survives reconnects (new key on op 4)
        self._dave_state: VoiceConnectionState | None = None  # the connection whose op 4 came last
        self._ssrc_users: dict[int, str] = {}
        self._clients: set[str] = set()  # user ids the voice server says are connected
        self._names: dict[str, str] = {}
        self._name_lookups: set[str] = set()
        self._speaking: dict[str, float] = {}  # user id -> monotonic time of last audio
        self._voice_ready_count = 0
        self._map_channel_id: int | None = None
        self._last_rebuild = 0.0
        self._dave_transitions = 0
        self._connecting = False
        self._watchdog: asyncio.Task | None = None
        self._closed = False

    # ------------------------------------------------------------------ the client thread

    async def _start(self) -> None:
        """Start the client's thread and loop (once) and a client (again if the last one stopped); wait until ready."""
        if not self.token:
            raise VoiceError("DISCORD_TOKEN is not set")
        if self._closed:
            raise VoiceError("the Discord adapter was closed")
        with self._start_lock:
            if self._thread is None or not self._thread.is_alive():
                looping = threading.Event()
                self._thread = threading.Thread(target=self._run, args=(looping,), name="dvm-discord", daemon=True)
                self._thread.start()
                looping.wait(10)
            ready = self._ready
            if ready is None or (ready.done() and (ready.exception() is not None or self._client is None
                                                   or self._client.is_closed())):
                ready = self._ready = concurrent.futures.Future()
                asyncio.run_coroutine_threadsafe(self._main(ready), self._loop)
        try:
            await asyncio.wait_for(asyncio.wrap_future(ready), READY_TIMEOUT_S)
        except asyncio.TimeoutError:
            raise VoiceError(f"Discord did not become ready within {READY_TIMEOUT_S:.0f} s (network? token?)") from None

    def _run(self, looping: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        loop.call_soon(looping.set)
        try:
            loop.run_forever()  # until close()
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()

    async def _main(self, ready: concurrent.futures.Future) -> None:
        if self.api_base:
            discord.http.Route.BASE = _api_base(self.api_base)
        if self.gateway_url:
            discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(self.gateway_url)
        # A connector with a context made now, so SSL_CERT_FILE set after aiohttp's import counts.
        connector = aiohttp.TCPConnector(limit=0, ssl=ssl.create_default_context())
        intents = discord.Intents.none()
        intents.guilds = True
        intents.voice_states = True
        client = _Client(self, intents=intents, connector=connector)
        self._client = client
        try:
            await client.start(self.token, reconnect=True)
        except Exception as exc:  # noqa: BLE001 - reported to the waiting join
            log.error("Discord client stopped: %s: %s", type(exc).__name__, exc,
                      exc_info=not isinstance(exc, (discord.LoginFailure, discord.GatewayNotFound)))
            if not ready.done():
                message = str(exc) or type(exc).__name__
                if isinstance(exc, discord.LoginFailure):
                    message = "Discord rejected DISCORD_TOKEN (login failed)"
                ready.set_exception(VoiceError(message))
        finally:
            if not client.is_closed():
                await client.close()
            if not ready.done():
                ready.set_exception(VoiceError("the Discord client stopped before it was ready"))

    async def _setup_hook(self, client: _Client) -> None:
        if self.api_base and not self.gateway_url:  # another API but no gateway given: ask it
            _, url, _ = await client.http.get_bot_gateway()
            discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(url)
        self._watchdog = asyncio.get_running_loop().create_task(self._watch())

    def _on_ready(self) -> None:
        self.counters["gateway_ready"] += 1
        if self._ready is not None and not self._ready.done():
            self._ready.set_result(True)

    async def _on_loop(self, coro) -> Any:
        """Await ``coro`` on the client's loop from whatever loop we are called on."""
        loop = self._loop
        assert loop is not None
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            return await coro
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, loop))

    async def close(self) -> None:
        """Leave voice, stop the client and its thread (idempotent)."""
        await asyncio.to_thread(self.shutdown)

    def shutdown(self, timeout: float = 40.0) -> None:
        """:meth:`close` for synchronous callers (e.g. at server exit); not from the client's own thread."""
        self._closed = True
        loop, thread = self._loop, self._thread
        if loop is None or thread is None or not thread.is_alive():
            return
        try:
            if self._client is not None:
                asyncio.run_coroutine_threadsafe(self._close(), loop).result(timeout)
        except Exception as exc:  # noqa: BLE001
            log.debug("closing the Discord client: %r", exc)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)

    async def _close(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
        self._target = None
        if self._vc is not None:
            try:
                await self._vc.disconnect(force=True)
            except Exception:  # noqa: BLE001
                pass
        await self._client.close()

    # ------------------------------------------------------------------ VoiceAdapter

    async def join_user_channel(self, sink: Sink) -> dict:
        if not self.user_id or not str(self.user_id).isdigit():
            raise VoiceError("DISCORD_USER_ID is not set to a Discord user id: cannot tell which user's channel to join")
        await self._start()
        return await self._on_loop(self._join_user(sink))

    async def join_channel(self, guild_id: str, channel_id: str, sink: Sink) -> dict:
        await self._start()
        return await self._on_loop(self._join_ids(str(guild_id), str(channel_id), sink))

    async def leave(self) -> dict:
        if self._loop is None or self._client is None:
            raise VoiceError("not in a voice channel")
        return await self._on_loop(self._leave())

    async def set_follow(self, enabled: bool) -> dict:
        if enabled and (not self.user_id or not str(self.user_id).isdigit()):
            raise VoiceError("DISCORD_USER_ID is not set to a Discord user id: there is nobody to follow")
        self._follow = bool(enabled)
        result = {"follow": self._follow, "user_id": self.user_id}
        if not self._follow:
            return result
        await self._start()
        return {**result, **await self._on_loop(self._follow_now())}

    def status(self) -> dict:
        client, vc = self._client, self._vc
        connected = bool(vc is not None and vc.is_connected())
        out: dict[str, Any] = {
            "gateway": ("ready" if client is not None and client.is_ready() and not client.is_closed()
                        else "stopped" if client is None or client.is_closed() else "connecting"),
            "connected": connected,
            "follow": self._follow,
            "user_id": self.user_id,
        }
        if vc is not None:
            out["guild"] = {"id": str(vc.guild.id), "name": vc.guild.name}
            channel = vc.channel
            out["channel"] = {"id": str(channel.id), "name": getattr(channel, "name", None)} if channel else None
            out["transport_mode"] = getattr(vc._connection, "mode", None) or None  # noqa: SLF001
            out["speakers"] = self._speakers(vc)
            out["dave"] = self._dave_status(vc)
        out["receive"] = self._receive_stats()
        out["reconnects"] = {
            "voice": max(0, self._voice_ready_count - 1) + self.counters["voice_rejoins"],
            "gateway": self.counters["gateway_resumes"] + max(0, self.counters["gateway_ready"] - 1),
            "gateway_disconnects": self.counters["gateway_disconnects"],
        }
        out["dave_rebuild_requests"] = self.counters["rebuild_requests"]
        return out

    # ------------------------------------------------------------------ joining and leaving (client loop)

    def _find_user_channel(self) -> discord.abc.GuildChannel | None:
        uid = int(self.user_id)
        for guild in self._client.guilds:
            for channel in (*guild.voice_channels, *guild.stage_channels):
                if uid in channel.voice_states:
                    return channel
        return None

    async def _join_user(self, sink: Sink) -> dict:
        channel = self._find_user_channel()
        if channel is None:
            raise VoiceError(f"user {self.user_id} is not in a voice channel the bot can see "
                             "(join one, and make sure the bot is in that server)")
        return await self._connect(channel, sink)

    async def _join_ids(self, guild_id: str, channel_id: str, sink: Sink) -> dict:
        try:
            guild = self._client.get_guild(int(guild_id))
        except ValueError:
            raise VoiceError(f"guild id {guild_id!r} is not a Discord id") from None
        if guild is None:
            raise VoiceError(f"guild {guild_id} not found (is the bot in that server?)")
        try:
            channel = guild.get_channel(int(channel_id))
        except ValueError:
            raise VoiceError(f"channel id {channel_id!r} is not a Discord id") from None
        if channel is None or not isinstance(channel, (discord.VoiceChannel, discord.StageChannel)):
            raise VoiceError(f"voice channel {channel_id} not found in {guild.name}")
        return await self._connect(channel, sink)

    async def _connect(self, channel, sink: Sink | None) -> dict:
        if sink is not None:
            self._sink = sink
        self._target = channel
        vc = self._vc
        self._connecting = True
        try:
            if vc is not None and vc.guild.id == channel.guild.id and vc.is_connected():
                if vc.channel is None or vc.channel.id != channel.id:
                    await vc.move_to(channel, timeout=CONNECT_TIMEOUT_S)
                    if vc.channel is None or vc.channel.id != channel.id or not vc.is_connected():
                        raise VoiceError(f"timed out moving to voice channel {channel.name}")
            else:
                if vc is not None:
                    await self._drop_voice(vc)
                if sink is not None:  # a join (not a rejoin): fresh receive counters
                    self._receiver = None
                try:
                    vc = await channel.connect(cls=_VoiceClient, timeout=CONNECT_TIMEOUT_S, reconnect=True,
                                               self_deaf=False, self_mute=True)
                except asyncio.TimeoutError:
                    self._target = None
                    raise VoiceError(f"timed out connecting to voice channel {channel.name}") from None
                except discord.ClientException as exc:
                    self._target = None
                    raise VoiceError(f"cannot join {channel.name}: {exc}") from None
                self._vc = vc
                vc._connection.add_socket_listener(self._on_packet)  # noqa: SLF001
                if self._dave_state is not vc._connection:  # noqa: SLF001 - the hook normally saw op 4
                    self._session_description(vc)
        finally:
            self._connecting = False
        return self._where(channel)

    def _where(self, channel) -> dict:
        return {"guild_id": str(channel.guild.id), "guild_name": channel.guild.name,
                "channel_id": str(channel.id), "channel_name": channel.name}

    async def _drop_voice(self, vc: _VoiceClient) -> None:
        try:
            vc._connection.remove_socket_listener(self._on_packet)  # noqa: SLF001
            await vc.disconnect(force=True)
        except Exception as exc:  # noqa: BLE001
            log.debug("voice disconnect: %r", exc)
        if self._vc is vc:
            self._vc = None
        self._reset_speakers()

    async def _leave(self) -> dict:
        vc = self._vc
        self._target = None
        if vc is None:
            raise VoiceError("not in a voice channel")
        where = self._where(vc.channel) if vc.channel is not None else {}
        await self._drop_voice(vc)
        return {"left": True, **where}

    async def _follow_now(self) -> dict:
        channel = self._find_user_channel()
        info: dict[str, Any] = {"user_channel": None if channel is None else self._where(channel)}
        vc = self._vc
        if channel is not None and vc is not None and (vc.channel is None or vc.channel.id != channel.id):
            await self._connect(channel, None)
            info["moved"] = True
        return info

    async def _on_voice_state_update(self, member, before, after) -> None:
        if member.id == getattr(self._client.user, "id", None):
            return
        self._names[str(member.id)] = member.display_name
        if not self._follow or self.user_id is None or str(member.id) != self.user_id:
            return
        vc = self._vc
        if after.channel is None:
            if vc is not None:
                log.info("followed user left voice: leaving too")
                where = self._where(vc.channel) if vc.channel is not None else {}
                self._target = None
                await self._drop_voice(vc)
                self._emit({"event": "left", "reason": "followed user left voice", **where})
            return
        if before.channel is not None and after.channel.id == before.channel.id:
            return
        if vc is not None or self._sink is not None:
            log.info("following user to %s", after.channel.name)
            try:
                await self._connect(after.channel, None)
            except VoiceError as exc:
                log.warning("could not follow to %s: %s", after.channel.name, exc)
                return
            self._emit({"event": "moved" if vc is not None else "joined", **self._where(after.channel)})

    def _emit(self, event: dict) -> None:
        if self.on_event is not None:
            try:
                self.on_event(event)
            except Exception:  # noqa: BLE001
                log.exception("on_event listener failed")

    async def _watch(self) -> None:
        """Rejoin when discord.py gave a voice connection up (its own retries exhausted)."""
        backoff = 1.0
        while True:
            await asyncio.sleep(WATCHDOG_INTERVAL_S)
            target, vc = self._target, self._vc
            if target is None or self._connecting or self._closed:
                continue
            gone = vc is None or vc not in self._client.voice_clients
            if not gone:
                backoff = 1.0
                continue
            log.warning("voice connection lost; rejoining %s", getattr(target, "name", target))
            self.counters["voice_rejoins"] += 1
            self._vc = None
            try:
                await self._connect(target, None)
                backoff = 1.0
            except Exception as exc:  # noqa: BLE001
                log.warning("rejoin failed: %s; retrying in %.0f s", exc, backoff)
                self._target = target
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 60.0)

    # ------------------------------------------------------------------ receive

    def _on_voice_event(self, vc: _VoiceClient, msg: dict) -> None:
        """Every JSON voice-gateway event, after discord.py handled it (client loop)."""
        op, data = msg.get("op"), msg.get("d") or {}
        if vc is not self._vc and self._vc is not None:
            return
        if op == 2:
            self._voice_ready_count += 1
            channel_id = vc.channel.id if vc.channel is not None else None
            if channel_id != self._map_channel_id:  # SSRCs belong to one channel's voice session
                self._reset_speakers()
                self._map_channel_id = channel_id
        elif op == 4:
            self._session_description(vc)
        elif op == 5 and "user_id" in data and "ssrc" in data:
            self._map(int(data["ssrc"]), str(data["user_id"]))
        elif op == 12 and "user_id" in data:  # client connect: its audio (and video) SSRCs
            if data.get("audio_ssrc"):
                self._map(int(data["audio_ssrc"]), str(data["user_id"]))
            for key in ("video_ssrc", "rtx_ssrc"):
                if data.get(key) and self._receiver is not None:
                    self._receiver.ignore_ssrc(int(data[key]))
        elif op == 11:
            for uid in data.get("user_ids", []):
                self._clients.add(str(uid))
                self._want_name(str(uid))
        elif op in (18, 20) and "user_id" in data:
            self._clients.add(str(data["user_id"]))
            self._want_name(str(data["user_id"]))
        elif op == 13 and "user_id" in data:
            uid = str(data["user_id"])
            self._clients.discard(uid)
            for ssrc in [s for s, u in self._ssrc_users.items() if u == uid]:
                del self._ssrc_users[ssrc]
            if self._receiver is not None:
                self._receiver.forget_user(uid)
        elif op == 22:
            self._dave_transitions += 1

    def _map(self, ssrc: int, user_id: str) -> None:
        self._ssrc_users[ssrc] = user_id
        self._clients.add(user_id)
        self._want_name(user_id)
        receiver = self._receiver
        if receiver is not None:
            receiver.map_ssrc(ssrc, user_id)

    def _session_description(self, vc: _VoiceClient) -> None:
        """Op 4 (first connect or any reconnect): the transport mode and key, and the DAVE session to use."""
        state = vc._connection  # noqa: SLF001
        if not state.secret_key or not state.mode:
            return
        self._dave_state = state
        if self._receiver is None:
            self._receiver = Receiver(state.mode, bytes(state.secret_key), self._dave_session, self._ssrc_users.get,
                                      self._deliver, on_dave_failure_run=self._on_dave_failures)
            for ssrc, uid in self._ssrc_users.items():
                self._receiver.map_ssrc(ssrc, uid)
        else:
            self._receiver.set_key(state.mode, bytes(state.secret_key))
        log.info("voice session ready: mode %s, DAVE protocol %s", state.mode, state.dave_protocol_version)

    def _dave_session(self) -> Any:
        """The davey session the receiver decrypts with (discord.py's, kept in step with the MLS group)."""
        state = self._dave_state
        return None if state is None else state.dave_session

    def _reset_speakers(self) -> None:
        self._ssrc_users.clear()
        self._clients.clear()
        self._speaking.clear()

    def _on_packet(self, data: bytes) -> None:
        """A UDP datagram from the voice socket (discord.py's socket-reader thread)."""
        if len(data) == 74 and data[:2] == b"\x00\x02":  # an IP discovery answer
            return
        receiver = self._receiver
        if receiver is None:
            self.counters["packets_before_session"] += 1
            return
        try:
            receiver.handle(data)
        except Exception:  # noqa: BLE001 - the receiver must never take the socket reader down
            self.counters["receiver_errors"] += 1
            log.exception("receiver failed on a packet")

    def _deliver(self, user_id: str, pcm: bytes) -> None:
        self._speaking[user_id] = time.monotonic()
        sink = self._sink
        if sink is not None:
            sink(user_id, self._name(user_id), pcm)

    def _on_dave_failures(self, user_id: str) -> None:
        """A run of DAVE decrypt failures for one user: ask the voice server to rebuild the group (op 31)."""
        now = time.monotonic()
        vc, loop = self._vc, self._loop
        if vc is None or loop is None or now - self._last_rebuild < REBUILD_MIN_INTERVAL_S:
            return
        state = vc._connection  # noqa: SLF001
        if state.dave_protocol_version == 0:
            return
        self._last_rebuild = now
        self.counters["rebuild_requests"] += 1
        log.warning("DAVE frames from %s keep failing to decrypt: asking the voice server to rebuild the group", user_id)
        asyncio.run_coroutine_threadsafe(state._recover_from_invalid_commit(0), loop)  # noqa: SLF001

    # ------------------------------------------------------------------ names and status

    def _name(self, user_id: str) -> str:
        name = self._names.get(user_id)
        if name is not None:
            return name
        vc, client = self._vc, self._client
        try:
            member = vc.guild.get_member(int(user_id)) if vc is not None else None
            user = member or (client.get_user(int(user_id)) if client is not None else None)
        except (ValueError, AttributeError):
            user = None
        if user is not None:
            name = getattr(user, "display_name", None) or user.name
            self._names[user_id] = name
            return name
        self._want_name(user_id)
        return user_id

    def _want_name(self, user_id: str) -> None:
        """Resolve a user's display name in the background (REST) if the caches do not have it."""
        if user_id in self._names or user_id in self._name_lookups or self._loop is None:
            return
        vc, client = self._vc, self._client
        if vc is not None:
            member = vc.guild.get_member(int(user_id))
            if member is not None:
                self._names[user_id] = member.display_name
                return
        if vc is None or client is None:
            return
        self._name_lookups.add(user_id)

        async def fetch() -> None:
            try:
                member = await vc.guild.fetch_member(int(user_id))
                self._names[user_id] = member.display_name
            except Exception as exc:  # noqa: BLE001 - the id stays the name
                log.debug("no name for %s: %r", user_id, exc)

        asyncio.run_coroutine_threadsafe(fetch(), self._loop)

    def _speakers(self, vc: _VoiceClient) -> list[dict]:
        me = getattr(self._client.user, "id", None)
        ids: set[str] = set(self._clients) | set(self._ssrc_users.values())
        if vc.channel is not None:
            ids |= {str(uid) for uid in getattr(vc.channel, "voice_states", {}) if uid != me}
        now = time.monotonic()
        by_user: dict[str, list[int]] = collections.defaultdict(list)
        for ssrc, uid in self._ssrc_users.items():
            by_user[uid].append(ssrc)
        out = []
        for uid in sorted(ids):
            last = self._speaking.get(uid)
            out.append({"user_id": uid, "name": self._name(uid), "ssrcs": sorted(by_user.get(uid, [])),
                        "last_audio_s_ago": None if last is None else round(now - last, 1)})
        return out

    def _dave_status(self, vc: _VoiceClient) -> dict:
        state = vc._connection  # noqa: SLF001
        session = state.dave_session
        out: dict[str, Any] = {"protocol_version": state.dave_protocol_version, "transitions": self._dave_transitions}
        if session is not None:
            out.update(epoch=session.epoch, ready=session.ready, status=str(session.status).rsplit(".", 1)[-1],
                       privacy_code=session.voice_privacy_code)
        return out

    def _receive_stats(self) -> dict:
        stats: dict = {}
        if self._receiver is not None:
            try:
                stats = dict(self._receiver.stats() or {})
            except Exception:  # noqa: BLE001
                log.exception("receiver.stats() failed")
        if isinstance(stats.get("ssrcs"), dict):  # JSON object keys are strings
            stats["ssrcs"] = {str(k): v for k, v in stats["ssrcs"].items()}
        extra = {k: self.counters[k] for k in ("packets_before_session", "receiver_errors") if self.counters[k]}
        return {**stats, **extra}
