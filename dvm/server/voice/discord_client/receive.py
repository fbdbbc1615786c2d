"""The receive hand-off: voice events -> SSRC/user map and session keys; UDP packets -> Receiver -> per-user PCM.

The :class:`~dvm.server.voice.receiver.Receiver` does transport decrypt, DAVE decrypt (with the
``davey.DaveSession`` discord.py keeps in step with the MLS group) and Opus; this module feeds it and
asks the voice server to rebuild the DAVE group (op 31) when a user's frames keep failing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from dvm.server.voice.receiver import Receiver

if TYPE_CHECKING:
    import discord
    from discord.voice_state import VoiceConnectionState

    from dvm.server.voice.discord_client.adapter import DiscordVoice

log = logging.getLogger("dvm.server.voice")

REBUILD_MIN_INTERVAL_S = 10.0  # at most one op 31 (group rebuild request) per this many seconds


class VoiceReceive:
    """Who is connected and which SSRC is whose, the join's Receiver, and the DAVE bookkeeping around it."""

    def __init__(self, owner: DiscordVoice):
        self._owner = owner
        self.receiver: Receiver | None = None  # one per join; survives reconnects (new key on op 4)
        self.ssrc_users: dict[int, str] = {}
        self.clients: set[str] = set()  # user ids the voice server says are connected
        self.speaking: dict[str, float] = {}  # user id -> monotonic time of last audio
        self.voice_ready_count = 0
        self.dave_transitions = 0
        self._dave_state: VoiceConnectionState | None = None  # the connection whose op 4 came last
        self._map_channel_id: int | None = None
        self._last_rebuild = 0.0

    # ------------------------------------------------------------------ voice events (client loop)

    def on_voice_event(self, vc: discord.VoiceClient, msg: dict) -> None:
        """A JSON voice-gateway event of the current connection, after discord.py handled it."""
        op, data = msg.get("op"), msg.get("d") or {}
        if op == 2:
            self._voice_ready(vc)
        elif op == 4:
            self.session_description(vc)
        elif op == 5 and "user_id" in data and "ssrc" in data:
            self._map(int(data["ssrc"]), str(data["user_id"]))
        elif op == 12 and "user_id" in data:  # client connect: its audio (and video) SSRCs
            if data.get("audio_ssrc"):
                self._map(int(data["audio_ssrc"]), str(data["user_id"]))
            for key in ("video_ssrc", "rtx_ssrc"):
                if data.get(key) and self.receiver is not None:
                    self.receiver.ignore_ssrc(int(data[key]))
        elif op == 11:
            for uid in data.get("user_ids", []):
                self._connected(str(uid))
        elif op in (18, 20) and "user_id" in data:
            self._connected(str(data["user_id"]))
        elif op == 13 and "user_id" in data:
            self._disconnected(str(data["user_id"]))
        elif op == 22:
            self.dave_transitions += 1

    def _voice_ready(self, vc: discord.VoiceClient) -> None:
        self.voice_ready_count += 1
        channel_id = vc.channel.id if vc.channel is not None else None
        if channel_id != self._map_channel_id:  # SSRCs belong to one channel's voice session
            self.reset_speakers()
            self._map_channel_id = channel_id

    def _connected(self, user_id: str) -> None:
        self.clients.add(user_id)
        self._owner.names.want(user_id)

    def _disconnected(self, user_id: str) -> None:
        self.clients.discard(user_id)
        for ssrc in [s for s, u in self.ssrc_users.items() if u == user_id]:
            del self.ssrc_users[ssrc]
        if self.receiver is not None:
            self.receiver.forget_user(user_id)

    def _map(self, ssrc: int, user_id: str) -> None:
        self.ssrc_users[ssrc] = user_id
        self._connected(user_id)
        receiver = self.receiver
        if receiver is not None:
            receiver.map_ssrc(ssrc, user_id)

    def session_description(self, vc: discord.VoiceClient) -> None:
        """Op 4 (first connect or any reconnect): the transport mode and key, and the DAVE session to use."""
        state = vc._connection  # noqa: SLF001 - discord.py 2.7 keeps the voice connection state private (no public accessor)
        if not state.secret_key or not state.mode:
            return
        self._dave_state = state
        if self.receiver is None:
            self.receiver = Receiver(state.mode, bytes(state.secret_key), self.dave_session, self.ssrc_users.get,
                                     self._deliver, on_dave_failure_run=self._on_dave_failures)
            for ssrc, uid in self.ssrc_users.items():
                self.receiver.map_ssrc(ssrc, uid)
        else:
            self.receiver.set_key(state.mode, bytes(state.secret_key))
        log.info("voice session ready: mode %s, DAVE protocol %s", state.mode, state.dave_protocol_version)

    def start_over(self) -> None:
        """A new join (not a rejoin): a new Receiver, with fresh counters, at the next op 4."""
        self.receiver = None

    def has_session_of(self, vc: discord.VoiceClient) -> bool:
        """Whether op 4 of this connection was seen (the hook normally sees it before connect() returns)."""
        return self._dave_state is vc._connection  # noqa: SLF001 - discord.py 2.7 keeps the voice connection state private (no public accessor)

    def dave_session(self) -> Any:
        """The davey session the receiver decrypts with (discord.py's, kept in step with the MLS group)."""
        state = self._dave_state
        return None if state is None else state.dave_session

    def reset_speakers(self) -> None:
        self.ssrc_users.clear()
        self.clients.clear()
        self.speaking.clear()

    # ------------------------------------------------------------------ packets (socket-reader thread)

    def on_packet(self, data: bytes) -> None:
        """A UDP datagram from the voice socket (discord.py's socket-reader thread)."""
        if len(data) == 74 and data[:2] == b"\x00\x02":  # an IP discovery answer
            return
        receiver = self.receiver
        if receiver is None:
            self._owner.counters["packets_before_session"] += 1
            return
        try:
            receiver.handle(data)
        except Exception:
            self._owner.counters["receiver_errors"] += 1
            log.exception("receiver failed on a packet")

    def _deliver(self, user_id: str, pcm: bytes) -> None:
        self.speaking[user_id] = time.monotonic()
        sink = self._owner.sink
        if sink is not None:
            sink(user_id, self._owner.names.name(user_id), pcm)

    def _on_dave_failures(self, user_id: str) -> None:
        """A run of DAVE decrypt failures for one user: ask the voice server to rebuild the group (op 31)."""
        now = time.monotonic()
        vc, loop = self._owner.voice_client, self._owner.loop
        if vc is None or loop is None or now - self._last_rebuild < REBUILD_MIN_INTERVAL_S:
            return
        state = vc._connection  # noqa: SLF001 - discord.py 2.7 keeps the voice connection state private (no public accessor)
        if state.dave_protocol_version == 0:
            return
        self._last_rebuild = now
        self._owner.counters["rebuild_requests"] += 1
        log.warning("DAVE frames from %s keep failing to decrypt: asking the voice server to rebuild the group", user_id)
        asyncio.run_coroutine_threadsafe(state._recover_from_invalid_commit(0), loop)  # noqa: SLF001 - discord.py 2.7 keeps the voice connection state private (no public accessor)

    def stats(self) -> dict:
        """The receiver's counters (JSON-ready), plus packets it never got."""
        stats: dict = {}
        if self.receiver is not None:
            try:
                stats = dict(self.receiver.stats() or {})
            except Exception:
                log.exception("receiver.stats() failed")
        if isinstance(stats.get("ssrcs"), dict):  # JSON object keys are strings
            stats["ssrcs"] = {str(k): v for k, v in stats["ssrcs"].items()}
        counters = self._owner.counters
        extra = {k: counters[k] for k in ("packets_before_session", "receiver_errors") if counters[k]}
        return {**stats, **extra}
