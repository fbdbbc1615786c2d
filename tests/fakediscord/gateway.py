"""The main gateway: hello, identify -> READY + GUILD_CREATE, heartbeats, and the voice join flow (op 4)."""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING

from aiohttp import WSMsgType, web

if TYPE_CHECKING:
    from .server import FakeDiscord

log = logging.getLogger("fakediscord.gateway")

DISPATCH, HEARTBEAT, IDENTIFY, VOICE_STATE, RESUME, REQUEST_MEMBERS, HELLO, HEARTBEAT_ACK = 0, 1, 2, 4, 6, 8, 10, 11


class GatewayConnection:
    def __init__(self, server: FakeDiscord, ws: web.WebSocketResponse):
        self.server = server
        self.ws = ws
        self.seq = 0
        self.identified = False

    async def send(self, op: int, d, t: str | None = None) -> None:
        payload = {"op": op, "d": d, "s": None, "t": t}
        if op == DISPATCH:
            self.seq += 1
            payload["s"] = self.seq
        if not self.ws.closed:
            await self.ws.send_str(json.dumps(payload))

    async def dispatch(self, event: str, data: dict) -> None:
        await self.send(DISPATCH, data, event)

    async def run(self) -> None:
        await self.send(HELLO, {"heartbeat_interval": 41250})
        async for msg in self.ws:
            if msg.type != WSMsgType.TEXT:
                continue
            data = json.loads(msg.data)
            op, d = data.get("op"), data.get("d")
            if op == HEARTBEAT:
                await self.send(HEARTBEAT_ACK, None)
            elif op == IDENTIFY:
                if d.get("token") != self.server.token:
                    await self.ws.close(code=4004, message=b"Authentication failed.")
                    return
                self.identified = True
                self.server.counters["identify"] += 1
                await self.dispatch("READY", self.server.ready_payload())
                await self.dispatch("GUILD_CREATE", self.server.guild_payload())
            elif op == RESUME:
                if d.get("token") != self.server.token:
                    await self.ws.close(code=4004, message=b"Authentication failed.")
                    return
                self.identified = True
                self.seq = max(self.seq, int(d.get("seq") or 0))
                self.server.counters["resume"] += 1
                await self.dispatch("RESUMED", {})
            elif op == VOICE_STATE:
                await self.server.bot_voice_state(self, d)
            elif op == REQUEST_MEMBERS:
                await self.dispatch("GUILD_MEMBERS_CHUNK", {
                    "guild_id": str(self.server.guild_id), "chunk_index": 0, "chunk_count": 1,
                    "members": [self.server.member_payload(u) for u in self.server.member_ids()],
                    "nonce": d.get("nonce")})


async def handler(request: web.Request) -> web.WebSocketResponse:
    from .server import FAKE

    server: FakeDiscord = request.app[FAKE]
    ws = web.WebSocketResponse(autoping=True)
    await ws.prepare(request)
    connection = GatewayConnection(server, ws)
    server.gateways.add(connection)
    try:
        await connection.run()
    finally:
        server.gateways.discard(connection)
    return ws
