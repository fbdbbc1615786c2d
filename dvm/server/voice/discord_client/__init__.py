"""The Discord voice adapter on discord.py 2.7 (this package is the only place that imports ``discord``).

discord.py connects, negotiates the transport mode and DAVE, and keeps the connections up; it
has no voice receive. We hook three of its voice internals (pinned to the 2.7 series, see ``patches``):

- ``VoiceConnectionState.add_socket_listener``: every UDP datagram of the voice socket;
- the voice websocket hook: every JSON voice event after discord.py has handled it (op 4
  session description -> mode + secret key, op 5 speaking -> SSRC of a user, op 11/13/18/20
  clients connecting and leaving, DAVE transitions);
- ``VoiceConnectionState.dave_session``: the ``davey.DaveSession`` discord.py keeps in step with
  the MLS group, which our :class:`~dvm.server.voice.receiver.Receiver` decrypts with.

The client runs on its own event loop in a daemon thread, started on the first join (``thread``); the
MCP app awaits the adapter's coroutines on its own loop and they hop over with
``run_coroutine_threadsafe``. ``DISCORD_API_BASE`` / ``DISCORD_GATEWAY_URL`` point discord.py at
another Discord-compatible endpoint; TLS trust follows ``SSL_CERT_FILE`` (read when the client
starts).

Modules: ``adapter`` (:class:`DiscordVoice`: the API, joining, leaving, following, rejoining),
``thread`` (client thread and loop), ``receive`` (packets and voice events to the receiver),
``names`` (user names, status pieces), ``state`` (the connection state), ``patches`` (discord.py subclasses).
"""

from dvm.server.voice.discord_client.adapter import DiscordVoice
from dvm.server.voice.discord_client.state import VoiceState

__all__ = ["DiscordVoice", "VoiceState"]
