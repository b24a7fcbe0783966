"""``GET /ohlcv/{symbol}`` against a real broker: the range, its end, the newest candles and
paging, and a broker that cannot be reached (tests/unit/gateway/test_rest.py has the rest)."""

# The fixtures are imported from the sibling module, so test parameters "redefine" them.
# ruff: noqa: F811

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from gateway import GatewaySettings, create_app
from gateway.history import TopicReader
from gateway.rest import MAX_RANGE_MS
from schemas.records import OHLCVUpdate
from tests.integration.test_gateway import (  # noqa: F401
    T0,
    Feed,
    candle,
    feed,
    gw,
    http_get,
    running_gateway,
    settings,
    topics,
)

pytestmark = pytest.mark.integration

MIN = 60_000


def worker_order(symbol: str, windows: int) -> list[OHLCVUpdate]:
    """Candles in the order the arbitration worker writes them: the first revision of each
    window, then the final of the window before it (finals in window order)."""
    out: list[OHLCVUpdate] = []
    for k in range(windows):
        out.append(candle(symbol, T0 + k * MIN, 100.0 + k))
        if k > 0:
            out.append(candle(symbol, T0 + (k - 1) * MIN, 200.0 + k - 1, rev=1, final=True))
    out.append(candle(symbol, T0 + (windows - 1) * MIN, 200.0 + windows - 1, rev=1, final=True))
    return out


def windows(body: dict[str, Any]) -> list[tuple[int, float, bool]]:
    return [(c["window_start_ms"], c["close"], c["is_final"]) for c in body["candles"]]


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A port bound but not listening: connections to it are refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


@pytest.fixture
async def app(settings: GatewaySettings) -> AsyncIterator[FastAPI]:
    """The gateway's app, started (hub connected) in this process, scanning the topic (no
    candle index: tests/integration/test_candle_index.py has the index's own failures)."""
    application = create_app(replace(settings, candle_index="off"))
    async with application.router.lifespan_context(application):
        yield application


async def test_end_1000_is_answered_not_a_500(gw: str) -> None:
    # It used to read from 1000 - 1 day: offsets_for_times(negative) raised, a 500.
    r = await http_get(gw, "/ohlcv/AAPL?end=1000")
    assert r.status_code == 200, r.text
    assert (r.json()["start"], r.json()["end"], r.json()["candles"]) == (0, 1000, [])


@pytest.mark.parametrize(
    "query",
    [
        "end=-1",
        "start=10&end=10",
        "end=253402300800000",
        f"start=0&end={MAX_RANGE_MS + 1}",
        "end=99999999999999999999",
    ],
)
async def test_bad_ranges_are_422_with_the_reason(gw: str, query: str) -> None:
    r = await http_get(gw, f"/ohlcv/AAPL?{query}")
    assert r.status_code == 422, r.text
    assert r.json()["detail"]


async def test_end_is_honoured_and_a_final_published_long_after_it_is_the_answer(
    gw: str, feed: Feed
) -> None:
    written = worker_order("XRP/USDT", 6)
    closing = next(
        i for i, c in enumerate(written) if c.is_final and c.window_start_ms == T0 + 2 * MIN
    )
    await feed.send("fiml.ohlcv", *written[:closing])
    # The final of the range's last window, published two hours after it (a worker that was
    # down), then the later windows, stamped with their own (earlier) times.
    await feed.send_at("fiml.ohlcv", T0 + 120 * MIN, written[closing])
    await feed.send("fiml.ohlcv", *written[closing + 1 :])
    r = await http_get(gw, f"/ohlcv/XRP_USDT?interval=1m&start={T0}&end={T0 + 3 * MIN}")
    assert r.status_code == 200, r.text
    assert windows(r.json()) == [(T0 + k * MIN, 200.0 + k, True) for k in range(3)]
    assert r.json()["truncated"] is False and r.json()["next_end"] is None
    # The windows after end exist, and a range that holds them answers them.
    r = await http_get(gw, f"/ohlcv/XRP_USDT?interval=1m&start={T0 + 3 * MIN}&end={T0 + 60 * MIN}")
    assert windows(r.json()) == [(T0 + k * MIN, 200.0 + k, True) for k in range(3, 6)]


async def test_a_long_range_answers_its_newest_candles_and_pages_back(
    settings: GatewaySettings, feed: Feed
) -> None:
    await feed.send("fiml.ohlcv", *worker_order("SOL/USDT", 12))
    pages: list[list[tuple[int, float, bool]]] = []
    async with running_gateway(replace(settings, max_candles=5)) as address:
        end: int | None = T0 + 12 * MIN
        while end is not None:
            r = await http_get(address, f"/ohlcv/SOL_USDT?start={T0}&end={end}")
            assert r.status_code == 200, r.text
            pages.append(windows(r.json()))
            assert r.json()["truncated"] is (r.json()["next_end"] is not None)
            end = r.json()["next_end"]
    assert [len(p) for p in pages] == [5, 5, 2]
    assert pages[0][0][0] == T0 + 7 * MIN  # the newest five first
    assert [c for page in reversed(pages) for c in page] == [
        (T0 + k * MIN, 200.0 + k, True) for k in range(12)
    ]


async def test_a_broker_that_cannot_be_reached_is_a_503(
    app: FastAPI, closed_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub = app.state.gateway.hub

    def unreachable(logical: str) -> TopicReader:
        # The hub's reader, with the partitions the hub knows, but the broker gone.
        count = len(hub.positions(logical))
        return TopicReader(f"127.0.0.1:{closed_port}", hub.physical(logical), count, 2.0)

    monkeypatch.setattr(hub, "reader", unreachable)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        r = await client.get(f"/ohlcv/BTC_USDT?start={T0}&end={T0 + MIN}")
    assert r.status_code == 503, r.text
    assert r.json()["detail"].startswith("cannot read candles: RangeReadError: cannot read")
