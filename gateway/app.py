"""The FastAPI application: WebSocket endpoints, REST reads, health, metrics and OpenAPI docs.

``create_app(settings)`` builds everything; the gateway starts (hub connected, partitions
assigned) in the app's lifespan, so tests and ``fiml up`` run it under any ASGI server.
"""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request, WebSocket
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.middleware.trustedhost import TrustedHostMiddleware

from gateway.auth import Principal
from gateway.channels import resolve_symbol
from gateway.hub import HubState
from gateway.service import Gateway, WebSocketMiddleware
from gateway.settings import GatewaySettings
from schemas import symbols as symbol_forms
from schemas.errors import ProtocolError, SymbolError
from schemas.protocol import ErrorCode, StreamType, SubscribeRequest
from schemas.records import Interval

__all__ = ["create_app"]

_PLACEHOLDER = (
    "<!doctype html><title>FIML Stream</title><h1>FIML Stream gateway</h1>"
    "<p>WebSocket: <code>/ws/stream</code>, <code>/ws/prices/{symbols}</code>. "
    'REST: <a href="/docs">/docs</a>, <a href="/health">/health</a>, '
    '<a href="/metrics">/metrics</a>, <a href="/ws/connections">/ws/connections</a>.</p>'
)


def create_app(settings: GatewaySettings | None = None, freeze_gc: bool = False) -> FastAPI:
    """The gateway as an ASGI app; ``settings`` defaults to ``GatewaySettings.from_env()``.

    ``freeze_gc`` (a process that runs only this gateway, as ``fiml gateway``): once started,
    move everything start-up made (modules, models, the warm caches) out of the collector's
    reach. It lives as long as the process, and every full collection walked it: 25-35 ms of
    stalled event loop, twice a second while a replay made records (docs/PERFORMANCE.md,
    "Replay"). Not for a process that starts many gateways (tests): what is frozen is never
    collected.
    """
    settings = settings or GatewaySettings.from_env()
    gateway = Gateway(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await gateway.start()
        if freeze_gc:
            gc.collect()
            gc.freeze()
        try:
            yield
        finally:
            await gateway.stop()

    # /docs and /openapi.json are served below, for admins where credentials are required.
    app = FastAPI(
        title="FIML Stream gateway",
        summary="Live, conflated, resumable market data over WebSocket, and history replay.",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,
        openapi_url=None,
    )
    app.state.gateway = gateway

    async def ws_stream(websocket: WebSocket, _: str) -> None:
        admitted, principal = await gateway.admit(websocket)
        if admitted:
            await gateway.serve(websocket, principal=principal)

    async def ws_prices(websocket: WebSocket, symbols: str) -> None:
        admitted, principal = await gateway.admit(websocket)
        if not admitted:
            return
        try:
            wanted = symbol_forms.from_url_list(symbols)
        except SymbolError as exc:
            # The connection stays open and usable: the client may still subscribe.
            error = ProtocolError(ErrorCode.UNKNOWN_SYMBOL, str(exc), "symbols")
            await gateway.serve(websocket, initial_error=error, principal=principal)
            return
        request = SubscribeRequest(stream_type=StreamType.PRICE, symbols=wanted, interval_ms=1000)
        await gateway.serve(websocket, initial=[request], principal=principal)

    def caller(request: Request) -> Principal:
        """The REST caller: its credentials' principal, or the anonymous one where allowed.

        Raises:
            HTTPException: 401 without valid credentials where anonymous access is refused.
        """
        principal = gateway.principal_of(gateway.credentials(request))
        if principal is None:
            gateway.metrics.auth_failures += 1
            raise HTTPException(
                401, "valid credentials required", headers={"WWW-Authenticate": "Bearer"}
            )
        return principal

    def admin(request: Request) -> Principal:
        """Raises: HTTPException: 401 (no credentials), 403 (not an admin key)."""
        principal = caller(request)
        if not principal.entitlements.admin:
            raise HTTPException(403, "an admin key is required")
        return principal

    def entitled(principal: Principal, stream_type: StreamType, symbol: str) -> None:
        """Raises: HTTPException: 403 naming what was asked."""
        try:
            principal.entitlements.check(stream_type, (symbol,), False, None, 0)
        except ProtocolError as exc:
            raise HTTPException(403, exc.message) from None

    # /ws/stream and /ws/prices/{symbols}, outside FastAPI's routing (WebSocketMiddleware).
    app.add_middleware(
        WebSocketMiddleware, routes={"/ws/stream": ws_stream, "/ws/prices/": ws_prices}
    )
    if settings.trusted_hosts:  # outermost: a foreign Host header is refused before anything
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(settings.trusted_hosts))

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> str:
        return _PLACEHOLDER

    @app.get(
        "/health",
        summary="Liveness and readiness of the hub",
        responses={503: {"description": "the hub is down: no live data is served"}},
    )
    async def health() -> Response:
        hub = gateway.hub
        body: dict[str, Any] = {
            "status": "ok" if hub.ready.is_set() else "starting",
            "hub": hub.state.value,
            "connections": len(gateway.connections),
            "lag": hub.lag(),
        }
        if gateway.candles is not None:  # GET /ohlcv's index: 503s while it is "building"
            body["candle_index"] = gateway.candles.health()
        if hub.state is HubState.FAILED:
            body |= {"status": "down", "reason": hub.failure}
            return JSONResponse(body, status_code=503)
        return JSONResponse(body)

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi(_: Principal = Depends(admin)) -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False)
    async def docs(_: Principal = Depends(admin)) -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title="FIML Stream gateway")

    @app.get("/metrics", response_class=PlainTextResponse, summary="Prometheus metrics")
    async def metrics(_: Principal = Depends(admin)) -> PlainTextResponse:
        return PlainTextResponse(
            gateway.render_metrics(), media_type="text/plain; version=0.0.4; charset=utf-8"
        )

    @app.get("/ws/connections", summary="Open connections, subscriptions, per-stream counts")
    async def connections(request: Request, details: bool = False) -> dict[str, Any]:
        # The counts are the seed's public endpoint; who is subscribed to what is for admins.
        if details:
            admin(request)
        return gateway.status(details)

    @app.get(
        "/prices/{symbol}",
        summary="Latest arbitrated price (with confidence and providers) of one symbol",
        responses={
            404: {"description": "no price seen for this symbol yet"},
            503: {"description": "the gateway is still reading its snapshot cache back"},
        },
    )
    async def latest_price(symbol: str, principal: Principal = Depends(caller)) -> Response:
        canonical = _symbol_or_422(symbol)
        entitled(principal, StreamType.PRICE, canonical)
        payload = gateway.hub.latest(("fiml.prices", canonical, ""))
        if payload is None and not gateway.hub.backfilled.is_set():
            raise HTTPException(
                503,
                f"no price for {canonical} read back yet: the gateway started a moment ago",
                headers={"Retry-After": "1"},
            )
        if payload is None:
            raise HTTPException(404, f"no price for {canonical} yet")
        return Response(payload, media_type="application/json")

    @app.get(
        "/ohlcv/{symbol}",
        summary="Candles of one symbol from the retained topic",
        description=(
            "The latest revision of each candle whose window starts in [start, end), oldest "
            "first: the newest `limit` (default and at most `max_candles`, 5,000 by default) of "
            "them. `truncated: true` says that older ones were left out; `end=next_end` asks "
            "for them. A range is at most 366 days."
        ),
        responses={
            422: {
                "description": "unknown symbol, or a bad range: a bound outside 1970..9999 "
                "(0..253402300799999), end <= start, or longer than 366 days; or a limit "
                "outside 1..max_candles"
            },
            503: {
                "description": "the broker or the topic cannot be read now; or, with "
                "Retry-After, the gateway's candle index has not read that far yet"
            },
        },
    )
    async def candles(
        request: Request,
        symbol: str,
        interval: Interval = Interval.M1,
        # The upper bounds and the range are checked by gateway.rest.candle_range (422).
        start: Annotated[int | None, Query(ge=0, description="epoch ms, inclusive")] = None,
        end: Annotated[
            int | None, Query(ge=0, description="epoch ms, exclusive; default now")
        ] = None,
        # The upper bound (max_candles) is checked by gateway.rest.candle_limit (422).
        limit: Annotated[
            int | None, Query(ge=1, description="at most this many candles; default max_candles")
        ] = None,
        principal: Principal = Depends(caller),
    ) -> Response:
        canonical = _symbol_or_422(symbol)
        entitled(principal, StreamType.OHLCV, canonical)
        from gateway.rest import answer_candles

        return await answer_candles(gateway, canonical, interval, start, end, limit)

    from gateway.dashboard import mount_dashboard

    mount_dashboard(app)
    return app


def _symbol_or_422(symbol: str) -> str:
    try:
        return resolve_symbol(symbol)
    except SymbolError as exc:
        raise HTTPException(422, f"unknown symbol {symbol!r}: {exc.reason}") from None
