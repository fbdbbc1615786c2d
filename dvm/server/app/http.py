"""Serving the app (stdio or streamable HTTP with DNS-rebinding protection and bearer auth), and every
reach into the MCP SDK's internals, kept here so an SDK upgrade has one place to check."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings
from mcp.server.context import ServerRequestContext
from mcp.server.mcpserver import MCPServer
from mcp.server.session import ServerSession
from mcp.server.transport_security import TransportSecuritySettings
from pydantic import BaseModel

from dvm.errors import DvmError

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")

RequestHandler = Callable[[ServerRequestContext, Any], Awaitable[Any]]


class UnsafeBindError(DvmError, ValueError):
    """An HTTP bind that would expose the server without protection (the CLI prints it as one line)."""


class StaticTokenVerifier:
    """Accepts exactly one bearer token (compared in constant time)."""

    def __init__(self, token: str):
        if not token:
            raise ValueError("an empty token would let anyone in")
        self._token = token.encode()

    async def verify_token(self, token: str) -> AccessToken | None:
        if hmac.compare_digest(token.encode(), self._token):
            return AccessToken(token="<redacted>", client_id="dvm-client", scopes=[])
        return None


def _check_bind(host: str, token: str | None, allowed_hosts: list[str] | None) -> None:
    if host in LOOPBACK_HOSTS:
        return
    if not token:
        raise UnsafeBindError(f"serving on {host} (not loopback) needs a token: set one so requests "
                              "must carry 'Authorization: Bearer <token>'")
    if not allowed_hosts:
        raise UnsafeBindError(f"serving on {host} (not loopback) needs the allowed Host headers set "
                              "explicitly (e.g. 'myhost.lan:8000')")


def http_app(app: MCPServer, *, host: str = "127.0.0.1", token: str | None = None,
             allowed_hosts: list[str] | None = None, allowed_origins: list[str] | None = None,
             path: str = "/mcp"):
    """The streamable-HTTP Starlette app, with DNS-rebinding protection and optional bearer auth.

    Loopback hosts allow loopback Host/Origin headers (plus any given). Any other host needs a
    token and an explicit ``allowed_hosts`` list (e.g. ``["myhost:8000"]``): the SDK would
    otherwise turn the protection off.
    """
    _check_bind(host, token, allowed_hosts)
    hosts = list(allowed_hosts or [])
    origins = list(allowed_origins or [])
    if host in LOOPBACK_HOSTS:
        hosts += ["127.0.0.1:*", "localhost:*", "[::1]:*"]
        origins += ["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"]
    security = TransportSecuritySettings(enable_dns_rebinding_protection=True, allowed_hosts=hosts,
                                         allowed_origins=origins)
    auth = verifier = None
    if token:
        verifier = StaticTokenVerifier(token)
        # issuer_url is required by the model but only used when this server issues tokens itself.
        auth = AuthSettings(issuer_url="http://localhost", resource_server_url=None)
    low = app._lowlevel_server  # noqa: SLF001 - the public wrapper reads auth only from the constructor
    return low.streamable_http_app(
        streamable_http_path=path, transport_security=security, host=host, auth=auth, token_verifier=verifier,
        custom_starlette_routes=list(getattr(app, "_custom_starlette_routes", [])), debug=app.settings.debug)


def run(app: MCPServer, transport: str = "stdio", host: str = "127.0.0.1", port: int = 8000,
        token: str | None = None, *, allowed_hosts: list[str] | None = None,
        allowed_origins: list[str] | None = None, path: str = "/mcp", log_level: str = "info") -> None:
    """Serve ``app`` until stopped: ``stdio`` (default) or ``http`` (streamable HTTP at ``path``)."""
    if transport == "stdio":
        app.run("stdio")
        return
    if transport not in ("http", "streamable-http"):
        raise DvmError(f"unknown transport {transport!r}; use stdio or http")
    starlette_app = http_app(app, host=host, token=token, allowed_hosts=allowed_hosts,
                             allowed_origins=allowed_origins, path=path)
    import uvicorn  # noqa: PLC0415 - only the HTTP transport needs it

    server = uvicorn.Server(uvicorn.Config(starlette_app, host=host, port=port, log_level=log_level.lower()))
    server.run()


# ---------------------------------------------------------------------------- SDK internals


def add_request_handler(app: MCPServer, method: str, params_type: type[BaseModel], handler: RequestHandler) -> None:
    """Serve a request method MCPServer has no public hook for (e.g. ``resources/subscribe``)."""
    low = app._lowlevel_server  # noqa: SLF001 - MCPServer serves resources/subscribe only through it
    low.add_request_handler(method, params_type, handler)


def connection_of(session: ServerSession) -> tuple[int, AsyncExitStack | None]:
    """A key for the connection behind a request's session, and that connection's exit stack (if any).

    ServerSession is a per-request proxy; its connection is what outlives the request.
    """
    connection = getattr(session, "_connection", None)
    if connection is None:
        return id(session), None
    return id(connection), getattr(connection, "exit_stack", None)
