"""The voice server: voice websocket (v8, JSON + DAVE binary frames), UDP IP discovery, media out.

Server -> client binary frames: uint16 sequence, uint8 opcode, payload (ops 29/30 put a uint16
transition id first). Client -> server binary frames: uint8 opcode, payload.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import struct
from typing import TYPE_CHECKING

from aiohttp import WSMsgType, web

from .dave import DaveCall, corrupt
from .media import RtpStream, ip_discovery_answer

if TYPE_CHECKING:
    from .server import FakeDiscord

log = logging.getLogger("fakediscord.voice")

# JSON ops
IDENTIFY, SELECT_PROTOCOL, READY, HEARTBEAT, SESSION_DESCRIPTION, SPEAKING, HEARTBEAT_ACK = 0, 1, 2, 3, 4, 5, 6
RESUME, HELLO, RESUMED, CLIENTS_CONNECT, CLIENT_DISCONNECT = 7, 8, 9, 11, 13
DAVE_EXECUTE_TRANSITION, DAVE_TRANSITION_READY, MLS_INVALID_COMMIT_WELCOME = 22, 23, 31
# binary ops
MLS_EXTERNAL_SENDER, MLS_KEY_PACKAGE, MLS_PROPOSALS, MLS_COMMIT_WELCOME = 25, 26, 27, 28
MLS_ANNOUNCE_COMMIT_TRANSITION, MLS_WELCOME = 29, 30


class VoiceConnection:
    """One voice websocket of the bot."""

    def __init__(self, server: FakeDiscord, ws: web.WebSocketResponse):
        self.server = server
        self.ws = ws
        self.seq = 0
        self.ssrc: int | None = None
        self.channel_id: int | None = None
        self.max_dave = 0
        self.mode: str | None = None
        self.key: bytes | None = None
        self.dave_version = 0
        self.call: DaveCall | None = None
        self.pending_transitions: set[int] = set()
        self.awaiting_commit = False
        self.media_ready = asyncio.Event()
        self.announced: set[int] = set()
        self.streams: dict[int, RtpStream] = {}
        self.closed = False

    # ------------------------------------------------------------------ sending

    async def send(self, op: int, d) -> None:
        self.seq += 1
        if not self.ws.closed:
            await self.ws.send_str(json.dumps({"op": op, "d": d, "seq": self.seq}))

    async def send_binary(self, op: int, payload: bytes) -> None:
        self.seq = (self.seq + 1) & 0xFFFF
        if not self.ws.closed:
            await self.ws.send_bytes(struct.pack(">HB", self.seq, op) + payload)

    async def announce(self, user) -> None:
        """Op 5: this user's SSRC (Discord sends it when someone starts speaking)."""
        if user.id not in self.announced:
            self.announced.add(user.id)
            await self.send(SPEAKING, {"user_id": str(user.id), "ssrc": user.ssrc, "speaking": 1})

    # ------------------------------------------------------------------ receiving

    async def run(self) -> None:
        await self.send(HELLO, {"heartbeat_interval": 13750, "v": 8})
        async for msg in self.ws:
            if msg.type == WSMsgType.TEXT:
                data = json.loads(msg.data)
                await self.on_json(data.get("op"), data.get("d") or {})
            elif msg.type == WSMsgType.BINARY and msg.data:
                await self.on_binary(msg.data[0], bytes(msg.data[1:]))

    async def on_json(self, op: int, d: dict) -> None:
        server = self.server
        server.voice_ops[op] += 1
        if op == IDENTIFY:
            expected = server.bot_voice
            if (expected is None or d.get("token") != expected["token"] or d.get("session_id") != expected["session_id"]
                    or str(d.get("user_id")) != str(server.bot_id) or str(d.get("server_id")) != str(server.guild_id)):
                await self.ws.close(code=4004, message=b"Authentication failed.")
                return
            self.channel_id = expected["channel_id"]
            self.max_dave = int(d.get("max_dave_protocol_version") or 0)
            self.ssrc = server.next_ssrc()
            await self.send(READY, {"ssrc": self.ssrc, "ip": "127.0.0.1", "port": server.udp_port,
                                    "modes": list(server.modes), "heartbeat_interval": 1})
        elif op == HEARTBEAT:
            await self.send(HEARTBEAT_ACK, {"t": (d or {}).get("t") if isinstance(d, dict) else d})
        elif op == RESUME:
            await self.send(RESUMED, None)
        elif op == SELECT_PROTOCOL:
            mode = (d.get("data") or {}).get("mode")
            if mode not in server.modes:
                await self.ws.close(code=4016, message=b"Unknown encryption mode.")
                return
            self.mode, self.key = mode, os.urandom(32)
            self.dave_version = 1 if server.dave and self.max_dave >= 1 else 0
            server.voice = self
            await self.send(SESSION_DESCRIPTION, {
                "audio_codec": "opus", "video_codec": "H264", "media_session_id": os.urandom(8).hex(),
                "mode": mode, "secret_key": list(self.key), "dave_protocol_version": self.dave_version})
            others = [u for u in server.users if server.voice_states.get(u.id) == self.channel_id]
            if others:
                await self.send(CLIENTS_CONNECT, {"user_ids": [str(u.id) for u in others]})
            if self.dave_version:
                self.call = server.dave_call(self.channel_id, [u.id for u in others])
                await self.send_binary(MLS_EXTERNAL_SENDER, self.call.sender.package())
            else:
                self.media_ready.set()
        elif op == DAVE_TRANSITION_READY:
            tid = int(d.get("transition_id", -1))
            if tid in self.pending_transitions:
                self.pending_transitions.discard(tid)
                await self.send(DAVE_EXECUTE_TRANSITION, {"transition_id": tid})
                server.events.append(f"transition {tid} executed")
                self.media_ready.set()
        elif op == MLS_INVALID_COMMIT_WELCOME:
            server.events.append(f"op 31 (invalid commit/welcome) for transition {d.get('transition_id')}")
            self.media_ready.clear()

    async def on_binary(self, op: int, payload: bytes) -> None:
        server = self.server
        server.voice_ops[op] += 1
        if self.call is None:
            return
        if op == MLS_KEY_PACKAGE:
            self.media_ready.clear()
            await self.act(self.call.bot_key_package(server.bot_id, payload))
        elif op == MLS_COMMIT_WELCOME:
            if self.awaiting_commit:
                self.awaiting_commit = False
                await self.act(self.call.bot_commit(payload))
            else:
                server.events.append("ignored the bot's losing commit")

    async def act(self, actions: list[tuple]) -> None:
        for action in actions:
            kind = action[0]
            if kind == "proposals":
                await self.send_binary(MLS_PROPOSALS, b"\x00" + action[1])
            elif kind == "await_commit":
                self.awaiting_commit = True
            else:
                tid, blob = action[1], action[2]
                self.pending_transitions.add(tid)
                if kind == "welcome":
                    if self.server.corrupt_welcomes > 0:
                        self.server.corrupt_welcomes -= 1
                        blob = corrupt(blob)
                        self.server.events.append(f"sent a corrupted welcome (transition {tid})")
                    await self.send_binary(MLS_WELCOME, struct.pack(">H", tid) + blob)
                else:
                    await self.send_binary(MLS_ANNOUNCE_COMMIT_TRANSITION, struct.pack(">H", tid) + blob)
        self.server.events.extend(self.call.events)
        self.call.events.clear()

    def stream(self, user) -> RtpStream:
        if user.id not in self.streams:
            self.streams[user.id] = RtpStream(user.ssrc, self.mode, self.key, padding_every=self.server.padding_every)
        return self.streams[user.id]


async def handler(request: web.Request) -> web.WebSocketResponse:
    from .server import FAKE

    server: FakeDiscord = request.app[FAKE]
    if request.query.get("v") != "8":
        raise web.HTTPBadRequest(text="voice gateway v8 only")
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    connection = VoiceConnection(server, ws)
    server.voice_connections += 1
    try:
        await connection.run()
    finally:
        connection.closed = True
        if server.voice is connection:
            server.voice = None
            if connection.call is not None:
                connection.call.bot_left()
    return ws


class UdpVoice(asyncio.DatagramProtocol):
    """The voice server's UDP port: answers IP discovery, remembers where each SSRC lives, counts the rest."""

    def __init__(self, server: FakeDiscord):
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        answer = ip_discovery_answer(data, addr[0], addr[1])
        if answer is None:
            self.server.counters["udp_in"] += 1
            return
        self.server.udp_addrs[struct.unpack_from(">I", data, 4)[0]] = addr
        self.transport.sendto(answer, addr)
