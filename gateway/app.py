"""The FastAPI application: WebSocket endpoints, REST reads, health, metrics and OpenAPI docs.

``create_app(settings)`` builds everything; the gateway starts (hub connected, partitions
assigned) in the app's lifespan, so tests and ``fiml up`` run it under any ASGI server.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import FastAPI, HTTPException, Query, Request, WebSocket
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response

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


def create_app(settings: GatewaySettings | None = None) -> FastAPI:
    """The gateway as an ASGI app; ``settings`` defaults to ``GatewaySettings.from_env()``."""
    settings = settings or GatewaySettings.from_env()
    gateway = Gateway(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await gateway.start()
        try:
            yield
        finally:
            await gateway.stop()

    app = FastAPI(
        title="FIML Stream gateway",
        summary="Live, conflated, resumable market data over WebSocket, and history replay.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.gateway = gateway

    async def ws_stream(websocket: WebSocket, _: str) -> None:
        await websocket.accept()
        await gateway.serve(websocket)

    async def ws_prices(websocket: WebSocket, symbols: str) -> None:
        await websocket.accept()
        try:
            wanted = symbol_forms.from_url_list(symbols)
        except SymbolError as exc:
            # The connection stays open and usable: the client may still subscribe.
            error = ProtocolError(ErrorCode.UNKNOWN_SYMBOL, str(exc), "symbols")
            await gateway.serve(websocket, initial_error=error)
            return
        request = SubscribeRequest(stream_type=StreamType.PRICE, symbols=wanted, interval_ms=1000)
        await gateway.serve(websocket, initial=[request])

    # /ws/stream and /ws/prices/{symbols}, outside FastAPI's routing (WebSocketMiddleware).
    app.add_middleware(
        WebSocketMiddleware, routes={"/ws/stream": ws_stream, "/ws/prices/": ws_prices}
    )

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
        if hub.state is HubState.FAILED:
            body |= {"status": "down", "reason": hub.failure}
            return JSONResponse(body, status_code=503)
        return JSONResponse(body)

    @app.get("/metrics", response_class=PlainTextResponse, summary="Prometheus metrics")
    async def metrics() -> PlainTextResponse:
        return PlainTextResponse(
            gateway.render_metrics(), media_type="text/plain; version=0.0.4; charset=utf-8"
        )

    @app.get("/ws/connections", summary="Open connections, subscriptions, per-stream counts")
    async def connections(details: bool = False) -> dict[str, Any]:
        return gateway.status(details)

    @app.get(
        "/prices/{symbol}",
        summary="Latest arbitrated price (with confidence and providers) of one symbol",
        responses={404: {"description": "no price seen for this symbol yet"}},
    )
    async def latest_price(symbol: str) -> Response:
        canonical = _symbol_or_422(symbol)
        payload = gateway.hub.latest(("fiml.prices", canonical, ""))
        if payload is None:
            raise HTTPException(404, f"no price for {canonical} yet")
        return Response(payload, media_type="application/json")

    @app.get("/ohlcv/{symbol}", summary="Candles of one symbol from the retained topic")
    async def candles(
        request: Request,
        symbol: str,
        interval: Interval = Interval.M1,
        start: Annotated[int | None, Query(ge=0, description="epoch ms, inclusive")] = None,
        end: Annotated[int | None, Query(ge=0, description="epoch ms, exclusive")] = None,
    ) -> dict[str, Any]:
        canonical = _symbol_or_422(symbol)
        from gateway.rest import read_candles

        return await read_candles(gateway, canonical, interval, start, end)

    from gateway.dashboard import mount_dashboard

    mount_dashboard(app)
    return app


def _symbol_or_422(symbol: str) -> str:
    try:
        return resolve_symbol(symbol)
    except SymbolError as exc:
        raise HTTPException(422, f"unknown symbol {symbol!r}: {exc.reason}") from None
