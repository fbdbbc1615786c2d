"""Live transcript notifications: :class:`LiveUpdates`, and hooking it onto a pipeline's listeners.

Each committed line publishes a resource-updated event two ways, so both client generations hear it:

- 2026-07-28 clients open ``subscriptions/listen`` (the SDK's ``ListenHandler`` over our bus);
- 2025-era clients send ``resources/subscribe`` (served through the low-level server) and get
  ``notifications/resources/updated`` on their connection's standalone stream.

The pipeline calls ``on_line`` from its worker threads; :class:`LiveUpdates` hops onto the server's
event loop before touching any stream.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Coroutine, Mapping
from typing import Any

import mcp.types as mt
from mcp.server.context import ServerRequestContext
from mcp.server.session import ServerSession
from mcp.server.subscriptions import InMemorySubscriptionBus, ResourceUpdated, SubscriptionBus

from dvm.server.app.http import connection_of
from dvm.server.app.uris import transcript_uri
from dvm.server.protocols import LiveCaptionSource, SessionItem, TranscriptionPipeline

log = logging.getLogger("dvm.server.app")


class LiveUpdates:
    """Fans resource-updated events out to both subscription flows; callable as the pipeline's ``on_line``.

    Thread-safe: ``publish``/``line_committed`` may be called from any thread once the server's
    event loop is known (bound by the server's lifespan and by every subscribe/join). Bursts for
    one URI coalesce into one event (they are level triggers: "re-read this").
    """

    def __init__(self, bus: SubscriptionBus | None = None):
        self.bus: SubscriptionBus = bus if bus is not None else InMemorySubscriptionBus()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._legacy: dict[str, dict[int, ServerSession]] = {}  # uri -> {connection key: session}
        self._watched: set[int] = set()
        self._pending: set[str] = set()
        self._tasks: set[asyncio.Task] = set()
        self._lock = threading.Lock()

    def bind_loop(self) -> None:
        try:
            self._loop = asyncio.get_running_loop()
        except RuntimeError:
            pass

    def submit(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run ``coro`` on the server's loop, from any thread; dropped (closed) if no loop is bound yet."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            asyncio.run_coroutine_threadsafe(coro, loop)
        else:
            coro.close()

    def __call__(self, line: SessionItem | Mapping[str, Any]) -> None:
        self.line_committed(line)

    def line_committed(self, line: SessionItem | Mapping[str, Any]) -> None:
        session_id = line["session_id"] if isinstance(line, Mapping) else line.session_id
        self.publish(transcript_uri(session_id))

    def publish(self, uri: str) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._schedule(uri)
            return
        try:
            loop.call_soon_threadsafe(self._schedule, uri)
        except RuntimeError:  # the loop closed between the check and the call
            pass

    def _schedule(self, uri: str) -> None:
        if uri in self._pending:
            return
        self._pending.add(uri)
        task = asyncio.get_running_loop().create_task(self._deliver(uri))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, uri: str) -> None:
        self._pending.discard(uri)
        try:
            await self.bus.publish(ResourceUpdated(uri=uri))
        except Exception:  # a custom bus failing must not stop legacy delivery
            log.exception("publishing %s on the subscription bus failed", uri)
        with self._lock:
            sessions = list(self._legacy.get(uri, {}).values())
        for session in sessions:
            try:
                await session.send_resource_updated(uri)
            except Exception as exc:  # noqa: BLE001 - best effort: the client may be gone
                log.debug("resource update for %s not delivered: %r", uri, exc)

    # 2025-era resources/subscribe, served through the low-level server

    async def on_subscribe(self, ctx: ServerRequestContext, params: mt.SubscribeRequestParams) -> mt.EmptyResult:
        self.bind_loop()
        key, stack = connection_of(ctx.session)
        with self._lock:
            self._legacy.setdefault(str(params.uri), {})[key] = ctx.session
            first = key not in self._watched
            self._watched.add(key)
        if first and stack is not None:
            stack.callback(self._forget, key)
        return mt.EmptyResult()

    async def on_unsubscribe(self, ctx: ServerRequestContext, params: mt.UnsubscribeRequestParams) -> mt.EmptyResult:
        key, _ = connection_of(ctx.session)
        with self._lock:
            subscribers = self._legacy.get(str(params.uri), {})
            subscribers.pop(key, None)
            if not subscribers:
                self._legacy.pop(str(params.uri), None)
        return mt.EmptyResult()

    def _forget(self, key: int) -> None:
        with self._lock:
            self._watched.discard(key)
            for uri in list(self._legacy):
                self._legacy[uri].pop(key, None)
                if not self._legacy[uri]:
                    del self._legacy[uri]

    def legacy_subscriber_count(self, uri: str) -> int:
        with self._lock:
            return len(self._legacy.get(uri, {}))


def chain_on_line(pipeline: TranscriptionPipeline, updates: LiveUpdates) -> None:
    """Hook ``updates`` into a pipeline built before the app: wrap its public ``on_line`` attribute."""
    previous = pipeline.on_line
    if previous is updates:
        return

    def on_line(line: SessionItem | Mapping[str, Any]) -> None:
        if previous is not None:
            try:
                previous(line)
            except Exception:
                log.exception("on_line callback failed")
        updates.line_committed(line)

    pipeline.on_line = on_line


def watch_interims(pipeline: TranscriptionPipeline, updates: LiveUpdates) -> None:
    """An interim line changes the live transcript too: notify on it, unless someone already listens."""
    if isinstance(pipeline, LiveCaptionSource) and pipeline.on_interim is None:
        pipeline.on_interim = updates.line_committed
