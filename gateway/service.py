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
import os
import secrets
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect

from gateway.auth import ANONYMOUS, Authenticator, KeyFile, Principal, anonymous_allowed
from gateway.budget import ReplayBudget
from gateway.candle_feed import OFF, CandleFeed
from gateway.connection import Connection, now_ms
from gateway.errors import (
    CLOSE_AUTH,
    CLOSE_LIFETIME,
    CLOSE_RATE_LIMITED,
    CLOSE_TOO_MANY_CONNECTIONS,
    SlowClientError,
)
from gateway.hub import Hub
from gateway.liveness import Change, status_frame
from gateway.metrics import Metrics, render
from gateway.positions import ResumeTokens
from gateway.registry import Registry
from gateway.session import ReplaySlots, Session
from gateway.settings import GatewaySettings
from schemas.errors import ProtocolError
from schemas.protocol import ErrorCode, SubscribeRequest

__all__ = ["ABORT_KEY", "Gateway", "WebSocketEndpoint", "WebSocketMiddleware", "keys_path"]

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


def keys_path(settings: GatewaySettings) -> Path:
    """The API key file: ``keys_file``, or ``$FIML_HOME/gateway-keys.json``."""
    if settings.keys_file:
        return Path(settings.keys_file)
    from infra.broker import fiml_home

    return fiml_home() / "gateway-keys.json"


def resume_secret(settings: GatewaySettings) -> bytes:
    """The secret that signs resume tokens: ``resume_secret``, or the key file in
    ``$FIML_HOME`` (made with 32 random bytes at first start, readable by its owner only).

    Raises:
        ValueError: ``resume_secret`` is shorter than 32 bytes.
    """
    if settings.resume_secret:
        return settings.resume_secret.encode()
    from infra.broker import fiml_home

    path = fiml_home() / "gateway-resume.key"
    if not path.exists():
        # written aside, then linked into place: two gateways starting at once agree on one
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(dir=path.parent, prefix=".resume-")  # mode 0600
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
        with contextlib.suppress(FileExistsError):
            os.link(temp, path)
        os.unlink(temp)
    return path.read_text().strip().encode()


def _jwt_verifier(settings: GatewaySettings) -> Any:
    if not (settings.jwt_secret or settings.jwt_jwks_file or settings.jwt_jwks_url):
        return None
    from gateway.tokens import JwtVerifier

    return JwtVerifier(
        secret=settings.jwt_secret or None,
        jwks_file=settings.jwt_jwks_file or None,
        jwks_url=settings.jwt_jwks_url or None,
        audience=settings.jwt_audience or None,
        issuer=settings.jwt_issuer or None,
    )


def _close_soon(websocket: WebSocket, code: int, reason: str) -> None:
    """Close from the ticker without waiting on the client (a task of its own)."""

    async def close() -> None:
        with contextlib.suppress(RuntimeError, OSError):
            await websocket.close(code, reason)

    task = asyncio.get_running_loop().create_task(close(), name=f"close-{code}")
    _CLOSING.add(task)  # a reference until it ends: the loop keeps only weak ones
    task.add_done_callback(_CLOSING.discard)


_CLOSING: set[asyncio.Task[None]] = set()


class Gateway:
    """Everything one gateway process shares between its connections."""

    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self.registry = Registry()
        self.tokens = ResumeTokens(resume_secret(settings))
        self.metrics = Metrics()
        self.hub = Hub(settings, self.registry, self.metrics)
        self.hub.on_status = self.publish_status
        #: The candle index behind ``GET /ohlcv`` (None: off, the topic is scanned).
        self.candles: CandleFeed | None = None
        if settings.candle_index != OFF and "fiml.ohlcv" in settings.topics:
            self.candles = CandleFeed(settings, self.hub)
        self.connections: dict[str, Connection] = {}
        self._watchdog: asyncio.Task[None] | None = None
        self.anonymous = anonymous_allowed(settings.anonymous, settings.host)
        self.authenticator = Authenticator(KeyFile(keys_path(settings)), _jwt_verifier(settings))
        self.replays = ReplaySlots(settings.max_replays, ReplayBudget(settings.replay_loop_share))
        # Open connections per client address and per owner (key or token subject).
        self._per_ip: dict[str, int] = {}
        self._per_owner: dict[str, int] = {}
        self._deadlines: dict[str, tuple[float, int, str]] = {}  # conn id -> (at, code, why)

    async def start(self) -> None:
        """Raises: KafkaError: the broker cannot be reached."""
        await self.hub.start()
        if self.candles is not None:
            await self.candles.start()  # builds in the background
        self._watchdog = asyncio.create_task(self._watch(), name="fiml-gateway-watchdog")

    async def stop(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watchdog
        if self.candles is not None:
            await self.candles.stop()
        await self.hub.stop()

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        limit = self.settings.slow_client_timeout_s
        tick = min(1.0, limit / 4, self.settings.heartbeat_s / 4)
        while True:
            await asyncio.sleep(tick)  # the ticker's period, not synchronisation
            now = loop.time()
            self.publish_status(self.hub.liveness.tick(now))
            for conn in list(self.connections.values()):
                since = conn.sending_since
                if since is not None and now - since > limit:
                    conn.fail(SlowClientError(f"a send was blocked for over {limit:g} s"))
                else:
                    conn.beat(now, self.hub.liveness)
                deadline = self._deadlines.get(conn.id)
                if deadline is not None and now >= deadline[0]:
                    del self._deadlines[conn.id]
                    _close_soon(conn.websocket, deadline[1], deadline[2])

    def publish_status(self, changes: list[Change]) -> None:
        """Send each liveness change to the subscriptions that asked for their symbols'."""
        if not changes:
            return
        at = now_ms()
        for conn in list(self.connections.values()):
            for sub in list(conn.subs.values()):
                if not sub.status:
                    continue
                for change in changes:
                    if change.symbol in sub.spec.symbols:
                        conn.put(status_frame(sub.id, change.symbol, change.state, at))

    def credentials(self, conn: HTTPConnection) -> str | None:
        """Credentials sent with a WebSocket handshake or a REST request: ``Authorization:
        Bearer``, ``X-API-Key``, or ``?token=`` (browsers cannot set headers on a WebSocket)."""
        auth = conn.headers.get("authorization", "")
        bearer = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
        return bearer or conn.headers.get("x-api-key") or conn.query_params.get("token") or None

    def principal_of(self, token: str | None) -> Principal | None:
        """Who a connection is at the handshake: the credentials' principal, the anonymous
        one where allowed, or None (it must send an ``auth`` message)."""
        if token is not None:
            return self.authenticator.authenticate(token)
        return ANONYMOUS if self.anonymous else None

    def origin_allowed(self, websocket: WebSocket) -> bool:
        """No Origin (not a browser), the gateway's own origin, or one of ``allowed_origins``."""
        origin = websocket.headers.get("origin")
        allowed = self.settings.allowed_origins
        if origin is None or "*" in allowed or origin in allowed:
            return True
        host = websocket.headers.get("host", "")
        return origin in (f"http://{host}", f"https://{host}")

    def status(self, details: bool = False) -> dict[str, Any]:
        """What ``GET /ws/connections`` returns (seed keys first)."""
        out: dict[str, Any] = {
            "active_connections": len(self.connections),
            "total_subscriptions": len(self.registry),
            "subscribed_symbols": self.registry.symbols(),
            "streams": self.registry.stream_counts(),
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

    async def admit(self, websocket: WebSocket) -> tuple[bool, Principal | None]:
        """The handshake's checks: ``(False, None)`` after refusing or closing the connection
        (a foreign origin is refused before it is accepted, an HTTP 403; bad credentials are
        accepted and closed with 4001, so a client can tell why). Otherwise the connection is
        accepted: ``(True, principal)``, None meaning it must authenticate."""
        if not self.origin_allowed(websocket):
            self.metrics.refused_connections += 1
            log.info("refused a WebSocket from origin %s", websocket.headers.get("origin"))
            await websocket.close(code=1008)  # before accept: an HTTP 403
            return False, None
        await websocket.accept()
        token = self.credentials(websocket)
        principal = self.principal_of(token)
        if token is not None and principal is None:
            self.metrics.auth_failures += 1
            await websocket.close(CLOSE_AUTH, "invalid credentials")
            return False, None
        return True, principal

    @staticmethod
    def _owner(principal: Principal | None) -> str | None:
        """Whose connection it is, for the per-key limit (None: anonymous or not known yet)."""
        return principal.owner if principal is not None and principal.authenticated else None

    def _count(self, ip: str, owner: str | None, step: int) -> None:
        self._per_ip[ip] = self._per_ip.get(ip, 0) + step
        if self._per_ip[ip] <= 0:
            del self._per_ip[ip]
        if owner is not None:
            self._count_owner(owner, step)

    def _count_owner(self, owner: str, step: int) -> int:
        """Add ``step`` to ``owner``'s connections and return how many it has now."""
        count = self._per_owner.get(owner, 0) + step
        if count > 0:
            self._per_owner[owner] = count
        else:
            self._per_owner.pop(owner, None)
        return count

    def _per_key_refusal(self) -> str:
        return f"at most {self.settings.max_connections_per_key} connections per key"

    def _over_limit(self, ip: str, principal: Principal | None) -> str | None:
        settings = self.settings
        if self._per_ip.get(ip, 0) >= settings.max_connections_per_ip:
            return f"at most {settings.max_connections_per_ip} connections per IP address"
        owner = self._owner(principal)
        if owner is not None and self._per_owner.get(owner, 0) >= settings.max_connections_per_key:
            return self._per_key_refusal()
        return None

    def _deadline(self, principal: Principal | None, now: float) -> tuple[float, int, str]:
        """When the connection is closed, with which code and why: ``auth_timeout_s`` without
        credentials; else at the end of its lifetime or when its credentials expire."""
        if principal is None:
            return now + self.settings.auth_timeout_s, CLOSE_AUTH, "authentication timeout"
        end, code, why = now + self.settings.max_connection_s, CLOSE_LIFETIME, "connection lifetime"
        if principal.expires_at_ms is not None:
            left = principal.expires_at_ms / 1000 - time.time()
            if now + left < end:
                end, code, why = now + left, CLOSE_AUTH, "credentials expired"
        return end, code, why

    async def serve(
        self,
        websocket: WebSocket,
        initial: Sequence[SubscribeRequest] = (),
        initial_error: ProtocolError | None = None,
        principal: Principal | None = ANONYMOUS,
    ) -> None:
        """Run one accepted connection until the client goes away. ``principal`` None: the
        client must authenticate (``auth``) within ``auth_timeout_s``."""
        loop = asyncio.get_running_loop()
        abort: Callable[[], None] | None = websocket.scope.get(ABORT_KEY)
        session: Session | None = None
        ip = websocket.client.host if websocket.client is not None else "?"
        why = self._over_limit(ip, principal)
        if why is not None:
            self.metrics.refused_connections += 1
            await websocket.close(CLOSE_TOO_MANY_CONNECTIONS, why)
            return

        def failed(conn: Connection) -> None:
            self.connections.pop(conn.id, None)
            if session is not None:
                session.detach_all()

        conn = Connection(websocket, self.settings, self.metrics, self.hub.positions, failed, abort)
        session = Session(
            conn,
            self.settings,
            self.hub,
            self.registry,
            self.tokens,
            self.metrics,
            loop.time,
            principal=principal,
            authenticator=self.authenticator,
            replays=self.replays,
        )
        self._count(ip, self._owner(principal), +1)
        self.connections[conn.id] = conn
        self.metrics.connections_total += 1
        # closed without credentials in time, at the end of its lifetime, or when the
        # credentials it came with expire
        self._deadlines[conn.id] = self._deadline(principal, loop.time())
        try:
            wire = websocket.query_params.get("format")
            if wire == "msgpack":
                conn.binary = True
            elif wire not in (None, "json"):
                session.error(
                    ProtocolError(
                        ErrorCode.INVALID_MESSAGE_TYPE,
                        f"unknown format {wire!r} in the URL: 'json' or 'msgpack'; "
                        "data messages stay JSON",
                        "format",
                    )
                )
            if initial_error is not None:
                session.error(initial_error)
            for request in initial:
                try:
                    session.require_principal()
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
                if data is None or conn.failed is not None:
                    continue
                was = session.principal
                await session.receive(data)
                # authenticated, or refreshed in band
                changed = session.principal is not was
                if changed and not self._authenticated(conn, session, was, loop.time()):
                    self.metrics.refused_connections += 1
                    await websocket.close(CLOSE_TOO_MANY_CONNECTIONS, self._per_key_refusal())
                    break
                if session.violations >= self.settings.max_rate_violations:
                    self.metrics.refused_connections += 1
                    await websocket.close(CLOSE_RATE_LIMITED, "too many messages")
                    break
        except (WebSocketDisconnect, RuntimeError, OSError):
            pass  # the client went away: same as a disconnect
        finally:
            self._count(ip, self._owner(session.principal), -1)
            self._deadlines.pop(conn.id, None)
            self.connections.pop(conn.id, None)
            await session.close()
            await conn.stop()

    def _authenticated(
        self, conn: Connection, session: Session, was: Principal | None, now: float
    ) -> bool:
        """Count the connection for its new owner (False: over the owner's connection limit);
        it lives until its credentials expire (a token) or its lifetime ends."""
        new = session.principal
        assert new is not None
        # counted when it first authenticates (uncounted at its end, as its final owner's)
        first = self._owner(was) is None
        if first and self._count_owner(new.owner, +1) > self.settings.max_connections_per_key:
            return False
        self._deadlines[conn.id] = self._deadline(new, now)
        return True
