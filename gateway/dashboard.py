"""The dashboard page: ``/`` and its static files, plus the two small reads it needs.

The page itself is plain JS talking the public WebSocket protocol (``/ws/stream``) and REST
(``/ohlcv/{symbol}`` for chart history), so it doubles as a living example of a client. The
chart library comes from npm (``make setup`` installs it into ``gateway/static/node_modules``)
and is served as is: no build step, no copy of third-party code in the repository.

Routes added: ``/`` (the page), ``/static/*``, ``/vendor/lightweight-charts/*``,
``GET /dashboard/config`` (the symbols to show) and ``GET /providers/health`` (the latest
``ProviderHealth`` record of each provider, read from the compacted topic).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles

from schemas.codec import decode
from schemas.errors import DecodeError
from schemas.records import ProviderHealth
from schemas.topics import TOPICS, topic_name

__all__ = ["DEFAULT_SYMBOLS", "HealthView", "mount_dashboard"]

STATIC = Path(__file__).parent / "static"
CHARTS = STATIC / "node_modules" / "lightweight-charts" / "dist"
# The demo's (agents.ingest.simconfig.DEFAULT_SYMBOLS; the gateway imports no agent code).
DEFAULT_SYMBOLS = "AAPL,GOOGL,MSFT,TSLA,NVDA,BTC/USDT,ETH/USDT"


class HealthView:
    """The latest health record per provider, following the topic from its start.

    One consumer per gateway, started on the first request and read incrementally, so a
    dashboard polling every few seconds never rereads the topic.
    """

    def __init__(self, bootstrap: str) -> None:
        self._bootstrap = bootstrap
        self._latest: dict[str, ProviderHealth] = {}
        self._consumer: Any = None
        self._lock = asyncio.Lock()

    async def _start(self) -> Any:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap, group_id=None, enable_auto_commit=False,
            client_id="fiml-dashboard-health", auto_offset_reset="earliest",
            isolation_level="read_committed",
        )  # fmt: skip
        await consumer.start()
        name = topic_name("fiml.provider.health")
        parts = [TopicPartition(name, p) for p in range(TOPICS["fiml.provider.health"].partitions)]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        return consumer

    async def latest(self) -> list[dict[str, Any]]:
        """Every provider's latest record, by name.

        Raises:
            KafkaError: the broker cannot be reached (the caller answers 503).
        """
        async with self._lock:
            if self._consumer is None:
                self._consumer = await self._start()
            while True:
                batches = await self._consumer.getmany(timeout_ms=50, max_records=5000)
                if not batches:
                    break
                for messages in batches.values():
                    for m in messages:
                        with contextlib.suppress(DecodeError):
                            record = decode(ProviderHealth, m.value)
                            self._latest[record.provider] = record
        return [self._latest[k].model_dump(mode="json") for k in sorted(self._latest)]

    async def stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None


def _symbols() -> list[str]:
    raw = os.environ.get("FIML_DASHBOARD_SYMBOLS") or DEFAULT_SYMBOLS
    return [s.strip() for s in raw.split(",") if s.strip()]


def mount_dashboard(app: FastAPI) -> None:
    """Serve the dashboard at ``/`` (replacing any placeholder page) and what it needs."""
    from fastapi import HTTPException

    bootstrap = getattr(getattr(app.state, "gateway", None), "settings", None)
    health = HealthView(
        bootstrap.bootstrap if bootstrap is not None
        else os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    )  # fmt: skip

    # The gateway's own "/" is a placeholder for when there is no dashboard: drop it so that
    # routing reaches ours (the first matching route wins).
    app.router.routes[:] = [
        r for r in app.router.routes if not (isinstance(r, APIRoute) and r.path == "/")
    ]

    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    async def config() -> dict[str, Any]:
        return {"symbols": _symbols(), "charts": (CHARTS / "lightweight-charts.standalone."
                                                  "production.js").exists()}  # fmt: skip

    async def provider_health() -> dict[str, Any]:
        from aiokafka.errors import KafkaError

        try:
            return {"providers": await health.latest()}
        except (KafkaError, OSError) as exc:
            raise HTTPException(503, f"cannot read provider health: {exc!r}") from None

    app.add_api_route("/", index, methods=["GET"], include_in_schema=False)
    app.add_api_route("/dashboard/config", config, methods=["GET"],
                      summary="Symbols the dashboard shows (FIML_DASHBOARD_SYMBOLS)")  # fmt: skip
    app.add_api_route("/providers/health", provider_health, methods=["GET"],
                      summary="Latest health record of each provider")  # fmt: skip
    app.mount("/static", StaticFiles(directory=STATIC, check_dir=False), name="static")
    # A short, stable URL for the library, whatever npm's layout of node_modules.
    app.mount("/vendor/lightweight-charts", StaticFiles(directory=CHARTS, check_dir=False),
              name="charts")  # fmt: skip

    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(target: FastAPI) -> AsyncIterator[Any]:
        # Wraps the gateway's lifespan so that the health consumer closes with the app.
        async with inner(target) as state:
            try:
                yield state
            finally:
                await health.stop()

    app.router.lifespan_context = lifespan
