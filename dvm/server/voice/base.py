"""What the MCP app needs from a voice connection, whatever carries it."""

from __future__ import annotations

from typing import Callable, Protocol

from dvm.errors import DvmError

# sink(speaker_id, speaker_name, pcm): 48 kHz stereo s16le PCM of one speaker, in arrival order.
Sink = Callable[[str, str, bytes], None]

# on_event(event): {"event": "left" | "moved" | "joined", guild/channel ids and names}, on the adapter's thread.
EventListener = Callable[[dict], None]


class VoiceError(DvmError):
    """A voice problem the user can act on; its message is shown to the MCP client as is."""


class VoiceAdapter(Protocol):
    # Set by the app: called when the adapter leaves, moves or joins on its own (follow mode).
    on_event: EventListener | None = None

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

    def shutdown(self, timeout: float = 40.0) -> None:
        """Leave voice and stop (at server exit; synchronous); nothing to do by default."""
