"""The gateway service: hub, registry, resume store, metrics and the open connections.

``Gateway.serve`` runs one WebSocket connection: the calling task reads client messages, the
connection's writer task (only while something is pending) sends. One ticker task per process,
not one per connection, sends the heartbeats and fails connections whose current send has been
blocked for ``slow_client_timeout_s`` (the watchdog).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect

from gateway.connection import Connection
from gateway.errors import SlowClientError
from gateway.hub import Hub
from gateway.metrics import Metrics, render
from gateway.registry import Registry, ResumeStore
from gateway.session import Session
from gateway.settings import GatewaySettings
from schemas.errors import ProtocolError
from schemas.protocol import SubscribeRequest

__all__ = ["ABORT_KEY", "Gateway", "WebSocketEndpoint", "WebSocketMiddleware"]

log = logging.getLogger(__name__)

ABORT_KEY = "fiml.abort"


WebSocketEndpoint = Callable[[WebSocket, str], Awaitable[None]]
"""Serves one accepted-or-not WebSocket; the second argument is the path after the prefix."""


class WebSocketMiddleware:
    """Serves the gateway's WebSocket endpoints ahead of the framework's routing, and puts a way
    to cut a connection's TCP transport into its scope (``ABORT_KEY``).

    Memory: FastAPI's route for a WebSocket keeps its dependency machinery (exit stacks,
    exception-handler and router frames) alive for the whole connection, about 9 KiB of
    objects per idle connection; served here, a connection costs the one ``WebSocket`` and the
    gateway's own objects (docs/WEBSOCKET.md). WebSocket routes have no OpenAPI entries, so
    nothing is lost from ``/docs``. Paths are matched exactly (``routes``: path prefix ->
    endpoint; a prefix ending in ``/`` takes one more segment); other WebSocket paths go on to
    the app.

    Abort: ASGI has none; a close frame waits behind everything already buffered, so a client
    that never reads again would hold its connection forever. uvicorn's ``send`` is a method of
    its protocol object, whose public ``transport`` can be aborted; the middleware must sit
    outside Starlette's exception middleware, which wraps ``send``. Other servers: no abort,
    the close frame is simply sent when the client reads.
    """

    def __init__(self, app: ASGIApp, routes: dict[str, WebSocketEndpoint]) -> None:
        self.app = app
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            await self.app(scope, receive, send)
            return
        transport = getattr(getattr(send, "__self__", None), "transport", None)
        abort = getattr(transport, "abort", None)
        if callable(abort):
            scope[ABORT_KEY] = abort
        path: str = scope["path"]
        for prefix, endpoint in self.routes.items():
            if prefix.endswith("/"):
                rest = path[len(prefix) :]
                if path.startswith(prefix) and rest and "/" not in rest:
                    await endpoint(WebSocket(scope, receive, send), rest)
                    return
            elif path == prefix:
                await endpoint(WebSocket(scope, receive, send), "")
                return
        await self.app(scope, receive, send)


class Gateway:
    """Everything one gateway process shares between its connections."""

    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self.registry = Registry()
        self.store = ResumeStore(settings.resume_max_parked, settings.resume_ttl_s)
        self.metrics = Metrics()
        self.hub = Hub(settings, self.registry, self.metrics)
        self.connections: dict[str, Connection] = {}
        self._watchdog: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Raises: KafkaError: the broker cannot be reached."""
        await self.hub.start()
        self._watchdog = asyncio.create_task(self._watch(), name="fiml-gateway-watchdog")

    async def stop(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watchdog
        await self.hub.stop()

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        limit = self.settings.slow_client_timeout_s
        tick = min(1.0, limit / 4, self.settings.heartbeat_s / 4)
        while True:
            await asyncio.sleep(tick)  # the ticker's period, not synchronisation
            now = loop.time()
            for conn in list(self.connections.values()):
                since = conn.sending_since
                if since is not None and now - since > limit:
                    conn.fail(SlowClientError(f"a send was blocked for over {limit:g} s"))
                else:
                    conn.beat(now)
            self.store.expire(now)

    def status(self, details: bool = False) -> dict[str, Any]:
        """What ``GET /ws/connections`` returns (seed keys first)."""
        out: dict[str, Any] = {
            "active_connections": len(self.connections),
            "total_subscriptions": len(self.registry),
            "subscribed_symbols": self.registry.symbols(),
            "streams": self.registry.stream_counts(),
            "resumable_subscriptions": len(self.store),
        }
        if details:
            out["connections"] = [c.describe() for c in self.connections.values()]
        return out

    def render_metrics(self) -> str:
        pending = [c.pending_updates for c in self.connections.values()]
        frames = [c.queued_frames for c in self.connections.values()]
        buffered = {
            "pending_updates": sum(pending),
            "queued_frames": sum(frames),
            "max_pending_updates": max(pending, default=0),
            "max_queued_frames": max(frames, default=0),
        }
        return render(
            self.metrics,
            len(self.connections),
            self.registry.stream_counts(),
            self.hub.lag(),
            buffered,
        )

    async def serve(
        self,
        websocket: WebSocket,
        initial: Sequence[SubscribeRequest] = (),
        initial_error: ProtocolError | None = None,
    ) -> None:
        """Run one accepted connection until the client goes away."""
        loop = asyncio.get_running_loop()
        abort: Callable[[], None] | None = websocket.scope.get(ABORT_KEY)
        session: Session | None = None

        def failed(conn: Connection) -> None:
            self.connections.pop(conn.id, None)
            if session is not None:
                session.park_all()

        conn = Connection(websocket, self.settings, self.metrics, self.hub.positions, failed, abort)
        session = Session(
            conn, self.settings, self.hub, self.registry, self.store, self.metrics, loop.time
        )
        self.connections[conn.id] = conn
        self.metrics.connections_total += 1
        try:
            if initial_error is not None:
                session.error(initial_error)
            for request in initial:
                try:
                    session.subscribe(request)
                except ProtocolError as exc:
                    session.error(exc)
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    break
                data = message.get("text")
                if data is None:
                    data = message.get("bytes")
                if data is not None and conn.failed is None:
                    session.handle(data)
        except (WebSocketDisconnect, RuntimeError, OSError):
            pass  # the client went away: same as a disconnect
        finally:
            self.connections.pop(conn.id, None)
            await session.close()
            await conn.stop()
