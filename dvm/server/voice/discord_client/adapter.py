"""DiscordVoice: the VoiceAdapter API and status(), and joining, leaving, following and rejoining voice channels."""

from __future__ import annotations

import asyncio
import collections
import logging
import os
from typing import Any, Callable

import discord

from dvm.server.voice.base import Sink, VoiceError
from dvm.server.voice.discord_client import names as status_parts
from dvm.server.voice.discord_client import redact
from dvm.server.voice.discord_client.names import Names, where
from dvm.server.voice.discord_client.patches import _VoiceClient
from dvm.server.voice.discord_client.receive import VoiceReceive
from dvm.server.voice.discord_client.state import VOICE, StateMachine, VoiceState
from dvm.server.voice.discord_client.thread import ClientThread, _Client

log = logging.getLogger("dvm.server.voice")

S = VoiceState
CONNECT_TIMEOUT_S = 30.0
WATCHDOG_INTERVAL_S = 2.0


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
        self.names = Names(self)
        self._state = StateMachine()
        self._thread = ClientThread(self, self._state)
        self._receive = VoiceReceive(self)
        self._vc: _VoiceClient | None = None
        self._target: discord.abc.Snowflake | None = None  # the channel we mean to be in
        self._sink: Sink | None = None
        self._follow = False
        self._watchdog: asyncio.Task | None = None

    # ------------------------------------------------------------------ what the helpers read

    @property
    def state(self) -> VoiceState:
        return self._state.state

    @property
    def client(self) -> _Client | None:
        return self._thread.client

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        return self._thread.loop

    @property
    def voice_client(self) -> _VoiceClient | None:
        return self._vc

    @property
    def sink(self) -> Sink | None:
        return self._sink

    # ------------------------------------------------------------------ VoiceAdapter

    async def _start(self) -> None:
        """Start the client's thread and loop (once) and a client (again if the last one stopped); wait until ready."""
        if not self.token:
            raise VoiceError("DISCORD_TOKEN is not set")
        if self._state.state is S.CLOSED:
            raise VoiceError("the Discord adapter was closed")
        redact.install(self.token)  # discord.py logs gateway events, voice tokens included, at DEBUG
        await self._thread.start()

    async def join_user_channel(self, sink: Sink) -> dict:
        if not self.user_id or not str(self.user_id).isdigit():
            raise VoiceError("DISCORD_USER_ID is not set to a Discord user id: cannot tell which user's channel to join")
        await self._start()
        return await self._thread.run(self._join_user(sink))

    async def join_channel(self, guild_id: str, channel_id: str, sink: Sink) -> dict:
        await self._start()
        return await self._thread.run(self._join_ids(str(guild_id), str(channel_id), sink))

    async def leave(self) -> dict:
        if self.loop is None or self.client is None:
            raise VoiceError("not in a voice channel")
        return await self._thread.run(self._leave())

    async def set_follow(self, enabled: bool) -> dict:
        if enabled and (not self.user_id or not str(self.user_id).isdigit()):
            raise VoiceError("DISCORD_USER_ID is not set to a Discord user id: there is nobody to follow")
        self._follow = bool(enabled)
        result = {"follow": self._follow, "user_id": self.user_id}
        if not self._follow:
            return result
        await self._start()
        return {**result, **await self._thread.run(self._follow_now())}

    def status(self) -> dict:
        client, vc = self.client, self._vc
        out: dict[str, Any] = {
            "gateway": status_parts.gateway_state(client),
            "connected": bool(vc is not None and vc.is_connected()),
            "follow": self._follow,
            "user_id": self.user_id,
        }
        if vc is not None:
            out["guild"] = {"id": str(vc.guild.id), "name": vc.guild.name}
            channel = vc.channel
            out["channel"] = {"id": str(channel.id), "name": getattr(channel, "name", None)} if channel else None
            out["transport_mode"] = getattr(vc._connection, "mode", None) or None  # noqa: SLF001 - discord.py 2.7 keeps the voice connection state private (no public accessor)
            out["speakers"] = status_parts.speakers(self._receive, self.names, vc, getattr(client.user, "id", None))
            out["dave"] = status_parts.dave_status(vc, self._receive.dave_transitions)
        out["receive"] = self._receive.stats()
        out["reconnects"] = status_parts.reconnects(self.counters, self._receive.voice_ready_count)
        out["dave_rebuild_requests"] = self.counters["rebuild_requests"]
        return out

    async def close(self) -> None:
        """Leave voice, stop the client and its thread (idempotent)."""
        await asyncio.to_thread(self.shutdown)

    def shutdown(self, timeout: float = 40.0) -> None:
        """:meth:`close` for synchronous callers (e.g. at server exit); not from the client's own thread."""
        self._state.transition(S.CLOSED, "shutdown")
        self._thread.stop(self._close, timeout)

    async def _close(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
        self._target = None
        if self._vc is not None:
            try:
                await self._vc.disconnect(force=True)
            except Exception:  # noqa: BLE001 - cleanup is best effort
                pass
        await self.client.close()

    # ------------------------------------------------------------------ client callbacks (client loop)

    def _on_client_setup(self) -> None:
        self._watchdog = asyncio.get_running_loop().create_task(self._watch())

    def _on_voice_event(self, vc: _VoiceClient, msg: dict) -> None:
        """Every JSON voice-gateway event, after discord.py handled it; only the current connection's count."""
        if vc is not self._vc and self._vc is not None:
            return
        self._receive.on_voice_event(vc, msg)

    async def _on_voice_state_update(self, member, before, after) -> None:
        if member.id == getattr(self.client.user, "id", None):
            return
        self.names.remember(str(member.id), member.display_name)
        if not self._follow or self.user_id is None or str(member.id) != self.user_id:
            return
        vc = self._vc
        if after.channel is None:
            if vc is not None:
                log.info("followed user left voice: leaving too")
                place = where(vc.channel) if vc.channel is not None else {}
                self._target = None
                await self._disconnect(vc, "the followed user left voice")
                self._emit({"event": "left", "reason": "followed user left voice", **place})
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
            self._emit({"event": "moved" if vc is not None else "joined", **where(after.channel)})

    def _emit(self, event: dict) -> None:
        if self.on_event is not None:
            try:
                self.on_event(event)
            except Exception:
                log.exception("on_event listener failed")

    # ------------------------------------------------------------------ joining and leaving (client loop)

    def _find_user_channel(self) -> discord.abc.GuildChannel | None:
        uid = int(self.user_id)
        for guild in self.client.guilds:
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
            guild = self.client.get_guild(int(guild_id))
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
        """Join ``channel`` (a join when ``sink`` is given, else a follow move or rejoin), or move there."""
        if sink is not None:
            self._sink = sink
        self._target = channel
        vc = self._vc
        self._state.transition(S.JOINING, f"{'join' if sink is not None else 'move or rejoin'}: {channel.name}")
        try:
            if vc is not None and vc.guild.id == channel.guild.id and vc.is_connected():
                if vc.channel is None or vc.channel.id != channel.id:
                    await vc.move_to(channel, timeout=CONNECT_TIMEOUT_S)
                    if vc.channel is None or vc.channel.id != channel.id or not vc.is_connected():
                        raise VoiceError(f"timed out moving to voice channel {channel.name}")
            else:
                await self._connect_new(vc, channel, fresh=sink is not None)
        except BaseException as exc:
            self._settle(f"could not join {channel.name}: {type(exc).__name__}")
            raise
        self._settle(f"in {channel.name}")
        return where(channel)

    async def _connect_new(self, vc: _VoiceClient | None, channel, fresh: bool) -> None:
        """A new voice connection to ``channel`` (dropping ``vc``, in another guild or no longer connected)."""
        if vc is not None:
            await self._drop_voice(vc)
        if fresh:  # a join (not a rejoin): fresh receive counters
            self._receive.start_over()
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
        vc._connection.add_socket_listener(self._receive.on_packet)  # noqa: SLF001 - discord.py 2.7 keeps the voice connection state private (no public accessor)
        if not self._receive.has_session_of(vc):  # the hook normally saw op 4
            self._receive.session_description(vc)

    def _settle(self, reason: str) -> None:
        """After a join, move or leave: CONNECTED with a voice client, LOST with a channel to rejoin, else READY.

        Only while the client is ready: a client (re)starting or stopped owns the state then.
        """
        new = S.CONNECTED if self._vc is not None else S.LOST if self._target is not None else S.READY
        self._state.transition(new, reason, only_from=VOICE)

    async def _drop_voice(self, vc: _VoiceClient) -> None:
        try:
            vc._connection.remove_socket_listener(self._receive.on_packet)  # noqa: SLF001 - discord.py 2.7 keeps the voice connection state private (no public accessor)
            await vc.disconnect(force=True)
        except Exception as exc:  # noqa: BLE001 - logged; the caller goes on
            log.debug("voice disconnect: %r", exc)
        if self._vc is vc:
            self._vc = None
        self._receive.reset_speakers()

    async def _disconnect(self, vc: _VoiceClient, reason: str) -> None:
        """Leave voice on purpose (``_target`` already cleared)."""
        self._state.transition(S.LEAVING, reason)
        try:
            await self._drop_voice(vc)
        finally:
            self._settle("left voice")

    async def _leave(self) -> dict:
        vc = self._vc
        self._target = None
        if vc is None:
            self._settle("leave: not in a voice channel")
            raise VoiceError("not in a voice channel")
        place = where(vc.channel) if vc.channel is not None else {}
        await self._disconnect(vc, "leave")
        return {"left": True, **place}

    async def _follow_now(self) -> dict:
        channel = self._find_user_channel()
        info: dict[str, Any] = {"user_channel": None if channel is None else where(channel)}
        vc = self._vc
        if channel is not None and vc is not None and (vc.channel is None or vc.channel.id != channel.id):
            await self._connect(channel, None)
            info["moved"] = True
        return info

    async def _watch(self) -> None:
        """Rejoin when discord.py gave a voice connection up (its own retries exhausted)."""
        backoff = 1.0
        while True:
            await asyncio.sleep(WATCHDOG_INTERVAL_S)
            target, vc = self._target, self._vc
            if target is None or self._state.state in (S.JOINING, S.CLOSED):
                continue
            gone = vc is None or vc not in self.client.voice_clients
            if not gone:
                backoff = 1.0
                continue
            log.warning("voice connection lost; rejoining %s", getattr(target, "name", target))
            self.counters["voice_rejoins"] += 1
            self._vc = None
            self._state.transition(S.LOST, "voice connection lost", only_from=VOICE)
            try:
                await self._connect(target, None)
                backoff = 1.0
            except Exception as exc:  # noqa: BLE001 - logged; the caller goes on
                log.warning("rejoin failed: %s; retrying in %.0f s", exc, backoff)
                self._target = target
                self._state.transition(S.LOST, "rejoin failed", only_from=VOICE)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 60.0)
