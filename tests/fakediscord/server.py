"""FakeDiscord: REST + main gateway + voice server on loopback, over TLS, in a thread of its own."""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import os
import struct
import threading
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from . import gateway, rest, voice
from .dave import DaveCall
from .media import MODES, SILENCE_FRAME, opus_frames
from .tls import make_tls

log = logging.getLogger("fakediscord")
FAKE = web.AppKey("fake", object)

GUILD_ID = 1100000000000000001
BOT_ID = 1200000000000000002
APP_ID = 1200000000000000002
CHANNELS = {"General": 1300000000000000001, "Quiet Room": 1300000000000000002}
TEXT_CHANNEL = 1300000000000000009


@dataclass
class FakeUser:
    id: int
    name: str
    ssrc: int
    channel_id: int | None = None


class FakeDiscord:
    """A Discord that a real discord.py bot can log into, join voice on, and hear users speak in.

    ``dave``: negotiate DAVE protocol 1 (the bot offers it); ``modes``: the transport modes offered,
    in the server's order of preference; ``commit_winner``: whose commit wins when the group is
    created with the bot ("user" or "bot"); ``corrupt_welcomes``: how many welcomes to corrupt
    (the bot answers op 31 and the group is rebuilt); ``speed``: how much faster than real time
    users speak.
    """

    def __init__(self, workdir: Path, users: list[tuple[str, str | None]] | None = None, *, dave: bool = True,
                 modes: tuple[str, ...] = MODES, commit_winner: str = "user", corrupt_welcomes: int = 0,
                 speed: float = 2.0, padding_every: int = 7):
        self.workdir = Path(workdir)
        self.token = "fake-bot-token." + os.urandom(6).hex()
        self.guild_id, self.bot_id, self.app_id = GUILD_ID, BOT_ID, APP_ID
        self.channels = dict(CHANNELS)
        users = users if users is not None else [("alice", "General")]
        self.users = [FakeUser(1400000000000000001 + i, name, 11111 + 1000 * i,
                               self.channels[ch] if ch else None) for i, (name, ch) in enumerate(users)]
        self.voice_states: dict[int, int] = {u.id: u.channel_id for u in self.users if u.channel_id}
        self.dave, self.modes, self.commit_winner = dave, tuple(modes), commit_winner
        self.corrupt_welcomes, self.speed, self.padding_every = corrupt_welcomes, speed, padding_every
        self.counters: collections.Counter = collections.Counter()
        self.voice_ops: collections.Counter = collections.Counter()
        self.events: list[str] = []
        self.gateways: set = set()
        self.voice: voice.VoiceConnection | None = None
        self.voice_connections = 0
        self.bot_voice: dict | None = None
        self.calls: dict[int, DaveCall] = {}
        self.udp_addrs: dict[int, tuple] = {}
        self._ssrcs = itertools.count(50001)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self.udp: asyncio.DatagramTransport | None = None
        self.port = self.udp_port = 0

    # ------------------------------------------------------------------ lifecycle (test thread)

    @property
    def api_base(self) -> str:
        return f"https://127.0.0.1:{self.port}/api/v10"

    @property
    def gateway_url(self) -> str:
        return f"wss://127.0.0.1:{self.port}/gateway"

    def start(self) -> FakeDiscord:
        self.ca_path, self._ssl = make_tls(self.workdir / "tls")
        started = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(started,), name="fakediscord", daemon=True)
        self._thread.start()
        if not started.wait(20):
            raise RuntimeError("fake Discord did not start")
        return self

    def _run(self, started: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        loop.run_until_complete(self._serve())
        started.set()
        loop.run_forever()
        loop.run_until_complete(self._shutdown())
        loop.close()

    async def _serve(self) -> None:
        app = web.Application()
        app[FAKE] = self
        app.add_routes([web.get("/gateway", gateway.handler), web.get("/", voice.handler), *rest.routes(self)])
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self._ssl)
        await site.start()
        self.port = self._runner.addresses[0][1]
        loop = asyncio.get_running_loop()
        self.udp, _ = await loop.create_datagram_endpoint(lambda: voice.UdpVoice(self), local_addr=("127.0.0.1", 0))
        self.udp_port = self.udp.get_extra_info("sockname")[1]

    async def _shutdown(self) -> None:
        if self.udp is not None:
            self.udp.close()
        if self._runner is not None:
            await self._runner.cleanup()

    def stop(self) -> None:
        if self._loop is not None and self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)

    def call(self, coro, timeout: float = 60.0):
        """Run a coroutine on the fake's loop from the test's thread and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    # ------------------------------------------------------------------ what tests drive

    def user(self, name: str) -> FakeUser:
        return next(u for u in self.users if u.name == name)

    def wait_media_ready(self, timeout: float = 30.0) -> None:
        """Block until the bot's voice connection can hear (DAVE transition executed, or DAVE off)."""
        async def wait():
            while self.voice is None:
                await asyncio.sleep(0.05)
            await self.voice.media_ready.wait()
        self.call(asyncio.wait_for(wait(), timeout), timeout + 5)

    def speak(self, name: str, wav: Path, *, timeout: float = 120.0, announce_after: int = 0) -> int:
        """User ``name`` says ``wav`` into the bot's voice connection (blocking); returns packets sent.

        ``announce_after``: send the SSRC's op 5 only after this many packets (tests early packets)."""
        return self.call(self._speak(self.user(name), Path(wav), announce_after), timeout)

    async def _speak(self, user: FakeUser, wav: Path, announce_after: int) -> int:
        conn = self.voice
        if conn is None:
            raise RuntimeError("the bot is not in voice")
        await asyncio.wait_for(conn.media_ready.wait(), 30)
        frames = list(opus_frames(str(wav))) + [SILENCE_FRAME] * 5
        stream = conn.stream(user)
        addr = self.udp_addrs[conn.ssrc]
        loop = asyncio.get_running_loop()
        interval = 0.020 / self.speed
        start = loop.time()
        if announce_after <= 0:
            await conn.announce(user)
        for i, frame in enumerate(frames):
            if i == announce_after and announce_after > 0:
                await conn.announce(user)
            payload = conn.call.encrypt(user.id, frame) if conn.dave_version else frame
            self.udp.sendto(stream.packet(payload), addr)
            self.counters["media_packets"] += 1
            delay = start + (i + 1) * interval - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
        return len(frames)

    def move_user(self, name: str, channel: str | None) -> None:
        """A user joins, moves to or (None) leaves a voice channel: the bot hears VOICE_STATE_UPDATE."""
        self.call(self._move_user(self.user(name), self.channels[channel] if channel else None))

    async def _move_user(self, user: FakeUser, channel_id: int | None) -> None:
        previous = user.channel_id
        user.channel_id = channel_id
        if channel_id is None:
            self.voice_states.pop(user.id, None)
        else:
            self.voice_states[user.id] = channel_id
        conn = self.voice
        if conn is not None and previous == conn.channel_id and channel_id != previous:
            await conn.send(voice.CLIENT_DISCONNECT, {"user_id": str(user.id)})
        for gw in list(self.gateways):
            await gw.dispatch("VOICE_STATE_UPDATE", self.voice_state_payload(user.id, channel_id, f"user-{user.id}"))

    def rotate_keys(self, tell_bot: bool = True) -> None:
        """A silent guest joins the DAVE group: new epoch, new keys. With ``tell_bot=False`` the bot
        misses the commit (op 29), cannot decrypt any more and must ask for a rebuild (op 31)."""
        async def rotate():
            conn = self.voice
            commit = conn.call.add_guest(1500000000000000001 + len(conn.call.users))
            self.events.extend(conn.call.events)
            conn.call.events.clear()
            if tell_bot:  # proposals first (the commit refers to them), then the winning commit
                await conn.send_binary(voice.MLS_PROPOSALS, b"\x00" + conn.call.last_proposals)
                tid = conn.call.next_transition()
                conn.pending_transitions.add(tid)
                await conn.send_binary(voice.MLS_ANNOUNCE_COMMIT_TRANSITION, struct.pack(">H", tid) + commit)
            else:
                self.events.append("the bot missed a commit")
        self.call(rotate())

    def kick_voice(self, code: int = 4006) -> None:
        """Close the bot's voice websocket (a voice server hiccup): the bot must reconnect."""
        async def kick():
            if self.voice is not None:
                await self.voice.ws.close(code=code, message=b"fake kick")
        self.call(kick())

    def drop_gateway(self) -> None:
        """Drop the bot's main gateway connection abruptly (it must resume or re-identify)."""
        async def drop():
            for gw in list(self.gateways):
                await gw.ws.close(code=4000, message=b"fake drop")
        self.call(drop())

    # ------------------------------------------------------------------ server internals (fake's loop)

    def next_ssrc(self) -> int:
        return next(self._ssrcs)

    def dave_call(self, channel_id: int, user_ids: list[int]) -> DaveCall:
        call = self.calls.get(channel_id)
        if call is None:
            call = self.calls[channel_id] = DaveCall(channel_id, user_ids, commit_winner=self.commit_winner)
            self.events.extend(call.events)
            call.events.clear()
        return call

    async def bot_voice_state(self, gw, d: dict) -> None:
        channel_id = int(d["channel_id"]) if d.get("channel_id") else None
        self.counters["bot_voice_state"] += 1
        if channel_id is None:
            self.voice_states.pop(self.bot_id, None)
        else:
            self.voice_states[self.bot_id] = channel_id
        session_id = f"voice-session-{os.urandom(4).hex()}"
        await gw.dispatch("VOICE_STATE_UPDATE", {**self.voice_state_payload(self.bot_id, channel_id, session_id),
                                                 "self_mute": bool(d.get("self_mute")),
                                                 "self_deaf": bool(d.get("self_deaf"))})
        if channel_id is None:
            self.bot_voice = None
            return
        self.bot_voice = {"channel_id": channel_id, "session_id": session_id, "token": os.urandom(8).hex()}
        await gw.dispatch("VOICE_SERVER_UPDATE", {"token": self.bot_voice["token"], "guild_id": str(self.guild_id),
                                                  "endpoint": f"127.0.0.1:{self.port}"})
        if self.voice is not None and self.voice.channel_id != channel_id:  # moved: Discord drops the old session
            await self.voice.ws.close(code=4014, message=b"Disconnected (moved).")

    # ------------------------------------------------------------------ payloads

    def member_ids(self) -> list[int]:
        return [self.bot_id] + [u.id for u in self.users]

    def user_payload(self, user_id: int) -> dict | None:
        if user_id == self.bot_id:
            return {"id": str(self.bot_id), "username": "dvm-bot", "discriminator": "0", "global_name": None,
                    "avatar": None, "bot": True, "flags": 0, "verified": True, "mfa_enabled": False}
        user = next((u for u in self.users if u.id == user_id), None)
        if user is None:
            return None
        return {"id": str(user.id), "username": user.name, "discriminator": "0",
                "global_name": user.name.capitalize(), "avatar": None}

    def member_payload(self, user_id: int) -> dict | None:
        user = self.user_payload(user_id)
        if user is None:
            return None
        return {"user": user, "nick": None, "roles": [], "joined_at": "2025-01-01T00:00:00+00:00",
                "deaf": False, "mute": False, "flags": 0}

    def voice_state_payload(self, user_id: int, channel_id: int | None, session_id: str) -> dict:
        return {"guild_id": str(self.guild_id), "channel_id": None if channel_id is None else str(channel_id),
                "user_id": str(user_id), "session_id": session_id, "deaf": False, "mute": False,
                "self_deaf": False, "self_mute": False, "self_video": False, "suppress": False,
                "request_to_speak_timestamp": None, "member": self.member_payload(user_id)}

    def ready_payload(self) -> dict:
        return {"v": 10, "user": self.user_payload(self.bot_id), "guilds": [{"id": str(self.guild_id), "unavailable": True}],
                "session_id": "gateway-session-" + os.urandom(4).hex(), "resume_gateway_url": self.gateway_url,
                "application": {"id": str(self.app_id), "flags": 0}, "private_channels": [], "relationships": [],
                "presences": [], "geo_ordered_rtc_regions": ["loopback"]}

    def guild_payload(self) -> dict:
        everyone = {"id": str(self.guild_id), "name": "@everyone", "permissions": str((1 << 41) - 1), "position": 0,
                    "color": 0, "hoist": False, "managed": False, "mentionable": False, "flags": 0}
        channels = [{"id": str(cid), "type": 2, "name": name, "position": i, "permission_overwrites": [],
                     "bitrate": 64000, "user_limit": 0, "parent_id": None, "rtc_region": None, "nsfw": False}
                    for i, (name, cid) in enumerate(self.channels.items())]
        channels.append({"id": str(TEXT_CHANNEL), "type": 0, "name": "general", "position": 0,
                         "permission_overwrites": [], "parent_id": None, "nsfw": False})
        members = [self.member_payload(uid) for uid in self.member_ids()]
        states = [self.voice_state_payload(uid, cid, f"user-{uid}") for uid, cid in self.voice_states.items()]
        for state in states:
            state.pop("member")
        return {"id": str(self.guild_id), "name": "Fake Guild", "icon": None, "owner_id": str(self.users[0].id if self.users else self.bot_id),
                "roles": [everyone], "emojis": [], "stickers": [], "features": [], "member_count": len(members),
                "members": members, "channels": channels, "threads": [], "voice_states": states, "presences": [],
                "stage_instances": [], "guild_scheduled_events": [], "soundboard_sounds": [], "large": False,
                "unavailable": False, "joined_at": "2025-01-01T00:00:00+00:00", "verification_level": 0,
                "default_message_notifications": 0, "explicit_content_filter": 0, "mfa_level": 0,
                "afk_timeout": 300, "afk_channel_id": None, "system_channel_id": None, "system_channel_flags": 0,
                "premium_tier": 0, "preferred_locale": "en-US", "nsfw_level": 0, "premium_progress_bar_enabled": False,
                "description": None, "vanity_url_code": None, "max_members": 500000, "application_id": None}
