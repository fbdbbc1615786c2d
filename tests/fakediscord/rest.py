"""The REST API subset discord.py needs to log in, find the gateway and look members up."""

from __future__ import annotations

from typing import TYPE_CHECKING

import json

from aiohttp import web

if TYPE_CHECKING:
    from .server import FakeDiscord


def _json(data, status: int = 200) -> web.Response:
    # discord.py parses a body as JSON only when Content-Type is exactly application/json, as Discord sends it
    return web.Response(body=json.dumps(data).encode(), status=status, headers={"Content-Type": "application/json"})


def routes(server: FakeDiscord) -> list[web.RouteDef]:
    def authorised(request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Bot {server.token}"

    def error(status: int, message: str, code: int = 0) -> web.Response:
        return _json({"message": message, "code": code}, status=status)

    async def handle(request: web.Request) -> web.Response:
        server.counters["rest_requests"] += 1
        if not authorised(request):
            return error(401, "401: Unauthorized")
        path = "/" + request.match_info["tail"]
        parts = path.strip("/").split("/")
        if request.method == "GET" and path == "/users/@me":
            return _json(server.user_payload(server.bot_id))
        if request.method == "GET" and path == "/oauth2/applications/@me":
            return _json({
                "id": str(server.app_id), "name": "dvm-test-bot", "description": "", "icon": None,
                "bot_public": False, "bot_require_code_grant": False, "verify_key": "00" * 32, "flags": 0,
                "owner": server.user_payload(server.users[0].id) if server.users else server.user_payload(server.bot_id),
            })
        if request.method == "GET" and path == "/gateway/bot":
            return _json({"url": server.gateway_url, "shards": 1, "session_start_limit": {
                "total": 1000, "remaining": 999, "reset_after": 0, "max_concurrency": 1}})
        if request.method == "GET" and path == "/gateway":
            return _json({"url": server.gateway_url})
        if request.method == "GET" and len(parts) == 4 and parts[0] == "guilds" and parts[2] == "members":
            if parts[1] != str(server.guild_id):
                return error(404, "Unknown Guild", 10004)
            member = server.member_payload(int(parts[3])) if parts[3].isdigit() else None
            return _json(member) if member else error(404, "Unknown Member", 10007)
        if request.method == "GET" and len(parts) == 2 and parts[0] == "users" and parts[1].isdigit():
            user = server.user_payload(int(parts[1]))
            return _json(user) if user else error(404, "Unknown User", 10013)
        return error(404, f"404: Not Found ({request.method} {path})")

    return [web.route("*", "/api/{version}/{tail:.*}", handle)]
