"""The Discord client's thread and event loop: started on the first join, a client run per start, ready, shutdown."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import ssl
import threading
from typing import TYPE_CHECKING, Any, Callable, Coroutine

import aiohttp
import discord
import discord.gateway
import discord.http
import yarl

from dvm.server.voice.base import VoiceError
from dvm.server.voice.discord_client.patches import api_base
from dvm.server.voice.discord_client.state import StateMachine, VoiceState

if TYPE_CHECKING:
    from dvm.server.voice.discord_client.adapter import DiscordVoice

log = logging.getLogger("dvm.server.voice")

READY_TIMEOUT_S = 60.0


class _Client(discord.Client):
    """discord.py's client, handing the gateway events dvm needs to the thread and the adapter."""

    def __init__(self, owner: ClientThread, **kwargs: Any):
        super().__init__(**kwargs)
        self.dvm_thread = owner
        self.dvm_adapter = owner.adapter  # the voice websocket hook (patches._VoiceClient) finds it here

    async def setup_hook(self) -> None:
        await self.dvm_thread.setup(self)

    async def on_ready(self) -> None:
        self.dvm_thread.on_ready()

    async def on_resumed(self) -> None:
        self.dvm_adapter.counters["gateway_resumes"] += 1

    async def on_disconnect(self) -> None:
        self.dvm_adapter.counters["gateway_disconnects"] += 1

    async def on_voice_state_update(self, member: discord.Member, before: discord.VoiceState,
                                    after: discord.VoiceState) -> None:
        await self.dvm_adapter._on_voice_state_update(member, before, after)  # noqa: SLF001 - the adapter's own hook, called from its discord.py subclass


class ClientThread:
    """A daemon thread running the client's loop (once), and the client on it (again if the last one stopped).

    The adapter's settings (token, API base, gateway URL) are read from it when a client starts.
    """

    def __init__(self, adapter: DiscordVoice, state: StateMachine):
        self.adapter = adapter
        self.loop: asyncio.AbstractEventLoop | None = None
        self.client: _Client | None = None
        self._state = state
        self._thread: threading.Thread | None = None
        self._ready: concurrent.futures.Future | None = None
        self._lock = threading.Lock()

    async def start(self) -> None:
        """Start the thread and a client if need be; wait until the client is ready."""
        ready = self._launch()
        try:
            await asyncio.wait_for(asyncio.wrap_future(ready), READY_TIMEOUT_S)
        except asyncio.TimeoutError:
            raise VoiceError(f"Discord did not become ready within {READY_TIMEOUT_S:.0f} s (network? token?)") from None

    def _launch(self) -> concurrent.futures.Future:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                looping = threading.Event()
                self._thread = threading.Thread(target=self._run, args=(looping,), name="dvm-discord", daemon=True)
                self._thread.start()
                looping.wait(10)
            ready = self._ready
            if ready is None or (ready.done() and (ready.exception() is not None or self.client is None
                                                   or self.client.is_closed())):
                ready = self._ready = concurrent.futures.Future()
                asyncio.run_coroutine_threadsafe(self._main(ready), self.loop)
            return ready

    def _run(self, looping: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        self.loop = loop
        asyncio.set_event_loop(loop)
        loop.call_soon(looping.set)
        try:
            loop.run_forever()  # until stop()
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()

    def _new_client(self) -> _Client:
        adapter = self.adapter
        if adapter.api_base:
            discord.http.Route.BASE = api_base(adapter.api_base)
        if adapter.gateway_url:
            discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(adapter.gateway_url)
        # A connector with a context made now, so SSL_CERT_FILE set after aiohttp's import counts.
        connector = aiohttp.TCPConnector(limit=0, ssl=ssl.create_default_context())
        intents = discord.Intents.none()
        intents.guilds = True
        intents.voice_states = True
        return _Client(self, intents=intents, connector=connector)

    async def _main(self, ready: concurrent.futures.Future) -> None:
        """One client's run, from login until it stops; failures before ready go to the waiting join."""
        client = self._new_client()
        self.client = client
        self._state.transition(VoiceState.STARTING, "starting the Discord client")
        failure: Exception | None = None
        try:
            await client.start(self.adapter.token, reconnect=True)
        except Exception as exc:
            failure = exc
            if self.client is client:  # not replaced by a newer start meanwhile
                self._state.transition(VoiceState.FAILED, f"the Discord client stopped: {type(exc).__name__}")
            log.error("Discord client stopped: %s: %s", type(exc).__name__, exc,
                      exc_info=not isinstance(exc, (discord.LoginFailure, discord.GatewayNotFound)))
            if not ready.done():
                message = str(exc) or type(exc).__name__
                if isinstance(exc, discord.LoginFailure):
                    message = "Discord rejected DISCORD_TOKEN (login failed)"
                ready.set_exception(VoiceError(message))
        finally:
            if not client.is_closed():
                await client.close()
            if not ready.done():
                ready.set_exception(VoiceError("the Discord client stopped before it was ready"))
            if failure is None and self.client is client:
                self._state.transition(VoiceState.STOPPED, "the Discord client stopped")

    async def setup(self, client: _Client) -> None:
        """The client's setup hook: find the gateway of another API, then the adapter's own setup."""
        adapter = self.adapter
        if adapter.api_base and not adapter.gateway_url:  # another API but no gateway given: ask it
            _, url, _ = await client.http.get_bot_gateway()
            discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(url)
        adapter._on_client_setup()  # noqa: SLF001 - the adapter's own hook, called from its discord.py subclass

    def on_ready(self) -> None:
        """Every gateway READY (the first, and after each new session); the first one ends a start."""
        self.adapter.counters["gateway_ready"] += 1
        self._state.transition(VoiceState.READY, "gateway ready", only_from=(VoiceState.STARTING,))
        if self._ready is not None and not self._ready.done():
            self._ready.set_result(True)

    async def run(self, coro: Coroutine) -> Any:
        """Await ``coro`` on the client's loop from whatever loop we are called on."""
        loop = self.loop
        assert loop is not None
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            return await coro
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, loop))

    def stop(self, close: Callable[[], Coroutine], timeout: float) -> None:
        """Run ``close()`` on the loop (if a client was made), then stop the loop and join the thread.

        Not from the client's own thread.
        """
        loop, thread = self.loop, self._thread
        if loop is None or thread is None or not thread.is_alive():
            return
        try:
            if self.client is not None:
                asyncio.run_coroutine_threadsafe(close(), loop).result(timeout)
        except Exception as exc:  # noqa: BLE001 - logged; the caller goes on
            log.debug("closing the Discord client: %r", exc)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
