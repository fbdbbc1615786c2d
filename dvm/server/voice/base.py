"""What the MCP app needs from a voice connection, whatever carries it."""

from __future__ import annotations

from typing import Callable, Protocol

# sink(speaker_id, speaker_name, pcm): 48 kHz stereo s16le PCM of one speaker, in arrival order.
Sink = Callable[[str, str, bytes], None]


class VoiceError(Exception):
    """A voice problem the user can act on; its message is shown to the MCP client as is."""


class VoiceAdapter(Protocol):
    async def join_user_channel(self, sink: Sink) -> dict:
        """Join the voice channel DISCORD_USER_ID is in; {"guild_id", "guild_name", "channel_id", "channel_name"}."""

    async def join_channel(self, guild_id: str, channel_id: str, sink: Sink) -> dict:
        """Join a given voice channel."""

    async def leave(self) -> dict:
        """Leave the current voice channel."""

    async def set_follow(self, enabled: bool) -> dict:
        """Follow DISCORD_USER_ID between channels (and leave when they leave)."""

    def status(self) -> dict:
        """Connection state, speakers, packet and DAVE counters."""
