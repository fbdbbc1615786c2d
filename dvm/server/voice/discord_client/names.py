"""User names (a display-name cache filled from discord.py's caches and REST) and the pieces of the adapter's status()."""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from typing import TYPE_CHECKING, Any

import discord

if TYPE_CHECKING:
    from dvm.server.voice.discord_client.adapter import DiscordVoice
    from dvm.server.voice.discord_client.receive import VoiceReceive

log = logging.getLogger("dvm.server.voice")


class Names:
    """Display names by user id; a user id with no name yet is looked up in the background."""

    def __init__(self, owner: DiscordVoice):
        self._owner = owner
        self._names: dict[str, str] = {}
        self._lookups: set[str] = set()

    def remember(self, user_id: str, name: str) -> None:
        self._names[user_id] = name

    def name(self, user_id: str) -> str:
        """The user's display name, or their id while it is not known yet (a lookup is then started)."""
        name = self._names.get(user_id)
        if name is not None:
            return name
        vc, client = self._owner.voice_client, self._owner.client
        try:
            member = vc.guild.get_member(int(user_id)) if vc is not None else None
            user = member or (client.get_user(int(user_id)) if client is not None else None)
        except (ValueError, AttributeError):
            user = None
        if user is not None:
            name = getattr(user, "display_name", None) or user.name
            self._names[user_id] = name
            return name
        self.want(user_id)
        return user_id

    def want(self, user_id: str) -> None:
        """Resolve a user's display name in the background (REST) if the caches do not have it."""
        loop = self._owner.loop
        if user_id in self._names or user_id in self._lookups or loop is None:
            return
        vc, client = self._owner.voice_client, self._owner.client
        if vc is not None:
            member = vc.guild.get_member(int(user_id))
            if member is not None:
                self._names[user_id] = member.display_name
                return
        if vc is None or client is None:
            return
        self._lookups.add(user_id)

        async def fetch() -> None:
            try:
                member = await vc.guild.fetch_member(int(user_id))
                self._names[user_id] = member.display_name
            except Exception as exc:  # noqa: BLE001 - the id stays the name
                log.debug("no name for %s: %r", user_id, exc)

        asyncio.run_coroutine_threadsafe(fetch(), loop)


def where(channel: Any) -> dict:
    """A voice channel as join/leave results and follow events name it."""
    return {"guild_id": str(channel.guild.id), "guild_name": channel.guild.name,
            "channel_id": str(channel.id), "channel_name": channel.name}


def gateway_state(client: discord.Client | None) -> str:
    if client is None or client.is_closed():
        return "stopped"
    return "ready" if client.is_ready() else "connecting"


def speakers(receive: VoiceReceive, names: Names, vc: discord.VoiceClient, me: int | None) -> list[dict]:
    """Everyone the voice server or the channel says is there (but us): name, SSRCs, when we last had audio."""
    ids: set[str] = set(receive.clients) | set(receive.ssrc_users.values())
    if vc.channel is not None:
        ids |= {str(uid) for uid in getattr(vc.channel, "voice_states", {}) if uid != me}
    now = time.monotonic()
    by_user: dict[str, list[int]] = collections.defaultdict(list)
    for ssrc, uid in receive.ssrc_users.items():
        by_user[uid].append(ssrc)
    out = []
    for uid in sorted(ids):
        last = receive.speaking.get(uid)
        out.append({"user_id": uid, "name": names.name(uid), "ssrcs": sorted(by_user.get(uid, [])),
                    "last_audio_s_ago": None if last is None else round(now - last, 1)})
    return out


def dave_status(vc: discord.VoiceClient, transitions: int) -> dict:
    state = vc._connection  # noqa: SLF001 - discord.py 2.7 keeps the voice connection state private (no public accessor)
    session = state.dave_session
    out: dict[str, Any] = {"protocol_version": state.dave_protocol_version, "transitions": transitions}
    if session is not None:
        out.update(epoch=session.epoch, ready=session.ready, status=str(session.status).rsplit(".", 1)[-1],
                   privacy_code=session.voice_privacy_code)
    return out


def reconnects(counters: collections.Counter, voice_ready_count: int) -> dict:
    return {
        "voice": max(0, voice_ready_count - 1) + counters["voice_rejoins"],
        "gateway": counters["gateway_resumes"] + max(0, counters["gateway_ready"] - 1),
        "gateway_disconnects": counters["gateway_disconnects"],
    }
