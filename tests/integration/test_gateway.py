"""The gateway against a real broker and a real WebSocket client, on uvicorn on a free port.

Derived records are produced straight to the topics (arbitration is another issue). Every wait
is a condition with a deadline, never a sleep.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any

import httpx
import orjson
import pytest
import uvicorn
from aiokafka import AIOKafkaProducer
from websockets.asyncio.client import ClientConnection, connect

from gateway import GatewaySettings, create_app
from gateway.server import uvicorn_options
from infra.topics import create_topics
from schemas.codec import encode
from schemas.records import AssetType, Interval, OHLCVUpdate, PriceUpdate, RawTick
from schemas.topics import topic_name

pytestmark = pytest.mark.integration

DEADLINE = 20.0
HOUR = 3_600_000
DAY = 24 * HOUR
# Yesterday 10:00 UTC. Records are timestamped with their event time, so T0 must be inside the
# topics' retention (7 days): the broker's retention check (every 5 min) deletes older ones.
T0 = int(time.time() * 1000) // DAY * DAY - DAY + 10 * HOUR


def price(symbol: str, value: float, t: int, asset: AssetType = AssetType.CRYPTO) -> PriceUpdate:
    return PriceUpdate(
        symbol=symbol,
        asset_type=asset,
        price=value,
        confidence=0.9,
        band_low=value * 0.999,
        band_high=value * 1.001,
        providers_used=["sim-a", "sim-b"],
        event_time_ms=t,
        source_ticks=2,
        provider="sim-a",
        day_open=value,
    )


def candle(symbol: str, start: int, close: float, rev: int = 0, final: bool = False) -> OHLCVUpdate:
    return OHLCVUpdate(
        symbol=symbol,
        interval=Interval.M1,
        window_start_ms=start,
        window_end_ms=start + 60_000,
        open=close,
        high=close + 1,
        low=close - 1,
        close=close,
        volume=1.0,
        trade_count=1,
        rev=rev,
        is_final=final,
        event_time_ms=start + rev,
    )


def tick(symbol: str, value: float, t: int, seq: int) -> RawTick:
    return RawTick(
        provider="sim-a",
        symbol=symbol,
        provider_symbol=symbol.replace("/", ""),
        asset_type=AssetType.CRYPTO,
        price=value,
        event_time_ms=t,
        ingest_time_ms=t,
        seq=seq,
    )


class Feed:
    """Produces records to the (prefixed) topics, keyed by symbol, timestamped by event time."""

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self.producer = producer

    async def send(self, logical: str, *records: Any) -> None:
        futures = [
            await self.producer.send(
                topic_name(logical), encode(r), key=r.symbol.encode(), timestamp_ms=r.event_time_ms
            )
            for r in records
        ]
        await asyncio.gather(*futures)

    async def send_at(self, logical: str, timestamp_ms: int, *records: Any) -> None:
        """Like ``send`` but with the Kafka timestamp given (publication time, not event time)."""
        futures = [
            await self.producer.send(
                topic_name(logical), encode(r), key=r.symbol.encode(), timestamp_ms=timestamp_ms
            )
            for r in records
        ]
        await asyncio.gather(*futures)


@contextlib.asynccontextmanager
async def running_gateway(
    settings: GatewaySettings, sndbuf: int | None = None, port: int = 0
) -> AsyncIterator[str]:
    """uvicorn serving ``create_app(settings)`` in this loop; yields ``host:port`` (``port``:
    a given one, e.g. a gateway restarted where clients expect it; 0: a free one).

    ``sndbuf``: the kernel send buffer of every accepted connection (set on the listening
    socket, which Linux copies to accepted ones), so a client that stops reading blocks the
    server's sends after kilobytes rather than megabytes.
    """
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if sndbuf is not None:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
    listener.bind(("127.0.0.1", port))
    port = listener.getsockname()[1]
    config = uvicorn.Config(
        create_app(replace(settings, port=port)),
        log_level="warning",
        lifespan="on",
        timeout_graceful_shutdown=5,
        **uvicorn_options(settings),
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[listener]))
    try:
        await until(lambda: server.started or task.done(), "uvicorn started")
        if task.done():
            task.result()
        yield f"127.0.0.1:{port}"
    finally:
        server.should_exit = True
        try:
            await asyncio.wait_for(task, 30)
        finally:
            listener.close()


async def until(condition: Callable[[], Any], what: str, deadline: float = DEADLINE) -> Any:
    """Poll ``condition`` (a function, or a coroutine function) until truthy; fail naming
    ``what`` after ``deadline`` seconds."""
    end = time.monotonic() + deadline
    while True:
        value = condition()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def recv(ws: ClientConnection, deadline: float = DEADLINE) -> dict[str, Any]:
    message: dict[str, Any] = orjson.loads(await asyncio.wait_for(ws.recv(), deadline))
    return message


async def recv_until(
    ws: ClientConnection, match: Callable[[dict[str, Any]], bool], deadline: float = DEADLINE
) -> dict[str, Any]:
    """The first message matching ``match`` (others are skipped) within ``deadline``."""
    end = time.monotonic() + deadline
    while True:
        message = await recv(ws, max(0.01, end - time.monotonic()))
        if match(message):
            return message


def is_type(kind: str) -> Callable[[dict[str, Any]], bool]:
    return lambda m: m["type"] == kind


@pytest.fixture
async def topics(kafka_bootstrap: str, topic_prefix: str) -> str:
    await create_topics(kafka_bootstrap)
    return topic_prefix


@pytest.fixture
async def feed(kafka_bootstrap: str, topics: str) -> AsyncIterator[Feed]:
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, linger_ms=2)
    await producer.start()
    try:
        yield Feed(producer)
    finally:
        await producer.stop()


@pytest.fixture
def settings(kafka_bootstrap: str, topics: str) -> GatewaySettings:
    # the gateways of a test share a resume secret, as a deployment's do
    return GatewaySettings(
        bootstrap=kafka_bootstrap,
        heartbeat_s=30.0,
        resume_secret="tests: a secret of 32 bytes or more, shared",
    )


@pytest.fixture
async def gw(settings: GatewaySettings) -> AsyncIterator[str]:
    async with running_gateway(settings) as address:
        yield address


async def http_get(address: str, path: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=f"http://{address}") as client:
        return await client.get(path)


async def subscribe(ws: ClientConnection, **fields: Any) -> dict[str, Any]:
    await ws.send(orjson.dumps({"type": "subscribe", **fields}).decode())
    return await recv_until(ws, lambda m: m["type"] in ("subscription_ack", "error"))


async def wait_cached(address: str, symbol_url: str, value: float) -> None:
    async def _has() -> bool:
        r = await http_get(address, f"/prices/{symbol_url}")
        return r.status_code == 200 and r.json()["price"] == value

    await until(_has, f"price {value} of {symbol_url} to reach the hub")


# --- snapshot, live, seed compatibility ---------------------------------------------------


async def test_price_snapshot_then_live(gw: str, feed: Feed) -> None:
    await feed.send("fiml.prices", price("BTC/USDT", 100.0, T0))
    await wait_cached(gw, "BTC_USDT", 100.0)
    async with connect(f"ws://{gw}/ws/stream") as ws:
        ack = await subscribe(ws, stream_type="price", symbols=["BTC/USDT"], interval_ms=100)
        assert ack["type"] == "subscription_ack" and ack["symbols"] == ["BTC/USDT"]
        snap = await recv_until(ws, is_type("data"))
        assert snap["seq"] == 1 and [d["price"] for d in snap["data"]] == [100.0]
        await feed.send("fiml.prices", price("BTC/USDT", 101.0, T0 + 1))
        live = await recv_until(ws, is_type("data"))
        assert live["seq"] == 2 and live["data"][-1]["price"] == 101.0
        assert live["subscription_id"] == ack["subscription_id"]


async def test_records_that_cannot_be_routed_are_skipped_and_counted(gw: str, feed: Feed) -> None:
    async with connect(f"ws://{gw}/ws/stream") as ws:
        await subscribe(ws, stream_type="price", symbols=["ETH/USDT"], mode="realtime")
        for bad in (b"not json", b'{"price": 1.0}'):
            await (await feed.producer.send(topic_name("fiml.prices"), bad, key=b"ETH/USDT"))
        await feed.send("fiml.prices", price("ETH/USDT", 2000.0, T0))
        live = await recv_until(ws, is_type("data"))
        assert [d["price"] for d in live["data"]] == [2000.0]
    metrics = (await http_get(gw, "/metrics")).text
    assert "fiml_gateway_decode_errors_total 2" in metrics, metrics


async def fiml_tail(*args: str) -> tuple[int, str, str]:
    """``fiml tail ARGS`` in a subprocess: (exit code, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "infra.cli",
        "tail",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), DEADLINE * 2)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_fiml_tail_prints_the_snapshot_then_live_records(gw: str, feed: Feed) -> None:
    await feed.send("fiml.prices", price("SOL/USDT", 150.0, T0))
    await wait_cached(gw, "SOL_USDT", 150.0)
    tail = asyncio.create_task(
        fiml_tail(
            "price",
            "SOL/USDT",
            "--gateway",
            f"http://{gw}",
            "--json",
            "--count",
            "2",
            "--interval-ms",
            "100",
        )
    )

    # the live price goes out once the tail has had the snapshot (its first data message, one
    # interval after the ack: a live price before it would take the snapshot's place)
    async def had_snapshot() -> bool:
        assert not tail.done(), "fiml tail exited before it subscribed"
        status = (await http_get(gw, "/ws/connections?details=true")).json()
        return any(s["seq"] >= 1 for c in status["connections"] for s in c["subscriptions"])

    await until(had_snapshot, "fiml tail to get the snapshot")
    await feed.send("fiml.prices", price("SOL/USDT", 151.0, T0 + 1))
    code, out, err = await tail
    assert code == 0, err
    lines = [orjson.loads(line) for line in out.splitlines()]
    assert [r["price"] for r in lines] == [150.0, 151.0]
    assert all(r["symbol"] == "SOL/USDT" for r in lines)


async def test_fiml_tail_says_when_the_gateway_is_not_there() -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code, _out, err = await fiml_tail("price", "SOL/USDT", "--gateway", f"ws://127.0.0.1:{port}")
    assert code == 1
    assert "cannot reach the gateway" in err


async def test_ohlcv_snapshot_then_live(gw: str, feed: Feed) -> None:
    await feed.send("fiml.ohlcv", candle("ETH/USDT", T0, 10.0))
    await feed.send("fiml.prices", price("ETH/USDT", 10.0, T0))  # a marker that the hub is there
    await wait_cached(gw, "ETH_USDT", 10.0)
    async with connect(f"ws://{gw}/ws/stream") as ws:
        await subscribe(ws, stream_type="ohlcv", symbols=["ETH/USDT"], params={"interval": "1m"})
        snap = await recv_until(ws, is_type("data"))
        assert snap["stream_type"] == "ohlcv" and snap["data"][0]["close"] == 10.0
        await feed.send("fiml.ohlcv", candle("ETH/USDT", T0, 11.0, rev=1, final=True))
        live = await recv_until(ws, is_type("data"))
        assert live["data"][-1]["close"] == 11.0 and live["data"][-1]["is_final"] is True
    r = await http_get(gw, f"/ohlcv/ETH_USDT?interval=1m&start={T0}&end={T0 + HOUR}")
    assert r.status_code == 200, r.text
    assert [(c["close"], c["rev"]) for c in r.json()["candles"]] == [(11.0, 1)]


SEED_SUBSCRIBE = """{
  "type": "subscribe",
  "stream_type": "price",
  "symbols": ["AAPL", "GOOGL"],
  "asset_type": "equity",
  "market": "US",
  "interval_ms": 1000,
  "data_type": "price"
}"""


async def test_seed_subscribe_example_byte_for_byte(gw: str, feed: Feed) -> None:
    async with connect(f"ws://{gw}/ws/stream") as ws:
        await ws.send(SEED_SUBSCRIBE)
        ack = await recv(ws)
        assert ack["type"] == "subscription_ack"
        assert (ack["stream_type"], ack["symbols"], ack["interval_ms"]) == (
            "price",
            ["AAPL", "GOOGL"],
            1000,
        )
        await feed.send("fiml.prices", price("AAPL", 190.5, T0, AssetType.EQUITY))
        data = await recv_until(ws, is_type("data"))
        assert data["data"][0]["symbol"] == "AAPL" and data["data"][0]["price"] == 190.5


async def test_prices_endpoint_auto_subscribes(gw: str, feed: Feed) -> None:
    async with connect(f"ws://{gw}/ws/prices/AAPL,BTC_USDT") as ws:
        ack = await recv(ws)
        assert ack["symbols"] == ["AAPL", "BTC/USDT"] and ack["interval_ms"] == 1000
        await feed.send("fiml.prices", price("BTC/USDT", 5.0, T0))
        data = await recv_until(ws, is_type("data"))
        assert data["data"][0]["symbol"] == "BTC/USDT"
    async with connect(f"ws://{gw}/ws/prices/BAD!SYMBOL") as ws:
        error = await recv(ws)
        assert error["error_code"] == "UNKNOWN_SYMBOL"
        ack = await subscribe(ws, stream_type="price", symbols=["AAPL"])
        assert ack["type"] == "subscription_ack"  # still usable


# --- conflation, unsubscribe, heartbeat ---------------------------------------------------


async def test_conflation_respects_interval(gw: str, feed: Feed) -> None:
    async with connect(f"ws://{gw}/ws/stream") as ws:
        await subscribe(
            ws, stream_type="price", symbols=["SOL/USDT"], interval_ms=400, snapshot=False
        )
        arrivals: list[tuple[float, dict[str, Any]]] = []

        async def pump() -> None:
            for i in range(1, 41):
                await feed.send("fiml.prices", price("SOL/USDT", float(i), T0 + i))
                await asyncio.sleep(0.03)  # pacing the producer over ~1.2 s, not a sync point

        producer = asyncio.create_task(pump())
        while not arrivals or arrivals[-1][1]["data"][-1]["price"] != 40.0:
            message = await recv_until(ws, is_type("data"))
            arrivals.append((time.monotonic(), message))
        await producer
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(arrivals)]
    assert len(arrivals) < 40  # conflated: fewer messages than updates
    assert all(gap >= 0.35 for gap in gaps), gaps  # 400 ms, minus delivery jitter
    for _, message in arrivals:
        assert len(message["data"]) == 1  # latest value per symbol only


async def test_unsubscribe_stops_data(gw: str, feed: Feed) -> None:
    async with connect(f"ws://{gw}/ws/stream") as ws:
        first = await subscribe(ws, stream_type="price", symbols=["XRP/USDT"], mode="realtime")
        await feed.send("fiml.prices", price("XRP/USDT", 1.0, T0))
        await recv_until(ws, is_type("data"))
        await ws.send(
            orjson.dumps(
                {"type": "unsubscribe", "subscription_id": first["subscription_id"]}
            ).decode()
        )
        ack = await recv_until(ws, is_type("unsubscribe_ack"))
        assert ack["subscription_id"] == first["subscription_id"]
        second = await subscribe(
            ws, stream_type="price", symbols=["XRP/USDT"], mode="realtime", snapshot=False
        )
        await feed.send("fiml.prices", price("XRP/USDT", 2.0, T0 + 1))
        # The sentinel subscription sees the update; the first one must not have, before it.
        message = await recv_until(ws, is_type("data"))
        assert message["subscription_id"] == second["subscription_id"]
        assert message["data"][0]["price"] == 2.0


async def test_unsubscribe_in_the_seed_form(gw: str, feed: Feed) -> None:
    async with connect(f"ws://{gw}/ws/stream") as ws:
        only = await subscribe(ws, stream_type="price", symbols=["AAPL"], snapshot=False)
        both = await subscribe(ws, stream_type="price", symbols=["AAPL", "MSFT"], snapshot=False)
        candles = await subscribe(ws, stream_type="ohlcv", symbols=["AAPL"], snapshot=False)
        # Ends the price subscriptions whose symbols are all listed: "only", not "both".
        await ws.send('{"type": "unsubscribe", "stream_type": "price", "symbols": ["AAPL"]}')
        ack = await recv_until(ws, lambda m: m["type"] in ("unsubscribe_ack", "error"))
        assert ack == {**ack, "type": "unsubscribe_ack", "subscription_id": only["subscription_id"]}
        await ws.send('{"type": "unsubscribe", "stream_type": "price", "symbols": ["AAPL"]}')
        error = await recv_until(ws, lambda m: m["type"] in ("unsubscribe_ack", "error"))
        assert (error["error_code"], error["field"]) == ("UNKNOWN_SUBSCRIPTION", "symbols")
        await ws.send(
            '{"type": "unsubscribe", "stream_type": "price", "symbols": ["MSFT", "AAPL", "GOOGL"]}'
        )
        ack = await recv_until(ws, lambda m: m["type"] in ("unsubscribe_ack", "error"))
        assert ack["subscription_id"] == both["subscription_id"]
        await feed.send("fiml.prices", price("AAPL", 4.0, T0, AssetType.EQUITY))
        await feed.send("fiml.ohlcv", candle("AAPL", T0, 4.0))
        message = await recv_until(ws, is_type("data"))  # only the candles remain
        assert message["subscription_id"] == candles["subscription_id"]


async def test_heartbeats(settings: GatewaySettings, feed: Feed) -> None:
    gateway = running_gateway(replace(settings, heartbeat_s=0.2))
    async with gateway as address, connect(f"ws://{address}/ws/stream") as ws:
        await subscribe(ws, stream_type="price", symbols=["AAPL"])
        beats = [await recv_until(ws, is_type("heartbeat")) for _ in range(2)]
    assert [b["active_subscriptions"] for b in beats] == [1, 1]


# --- bad input ----------------------------------------------------------------------------


BAD_INPUTS = [
    ("{not json", "INVALID_JSON", None),
    ("[1, 2]", "INVALID_MESSAGE_TYPE", "type"),
    ('{"type": "dance"}', "INVALID_MESSAGE_TYPE", "type"),
    ('{"type": "subscribe", "symbols": ["AAPL"]}', "SUBSCRIPTION_ERROR", "stream_type"),
    (
        '{"type": "subscribe", "stream_type": "price", "symbols": ["AAPL"], "interval_ms": 50}',
        "SUBSCRIPTION_ERROR",
        "interval_ms",
    ),
    (
        '{"type": "subscribe", "stream_type": "price", "symbols": []}',
        "SUBSCRIPTION_ERROR",
        "symbols",
    ),
    (
        orjson.dumps(
            {"type": "subscribe", "stream_type": "price", "symbols": [f"S{i}" for i in range(51)]}
        ).decode(),
        "SUBSCRIPTION_ERROR",
        "symbols",
    ),
    (
        '{"type": "subscribe", "stream_type": "price", "symbols": ["AAPL", "no such!"]}',
        "UNKNOWN_SYMBOL",
        "symbols.1",
    ),
    (
        '{"type": "subscribe", "stream_type": "ohlcv", "symbols": ["AAPL"], '
        '"params": {"interval": "7m"}}',
        "SUBSCRIPTION_ERROR",
        "params.interval",
    ),
    (
        '{"type": "unsubscribe", "subscription_id": "nope"}',
        "UNKNOWN_SUBSCRIPTION",
        "subscription_id",
    ),
    (
        '{"type": "subscribe", "stream_type": "price", "symbols": ["AAPL"], '
        '"subscription_id": "gone", "resume_from": 3, "resume_token": "t"}',
        "RESUME_UNAVAILABLE",
        "resume_token",
    ),
]


async def test_bad_input_gets_errors_and_connection_stays_usable(
    settings: GatewaySettings, feed: Feed
) -> None:
    gateway = running_gateway(replace(settings, max_subscriptions=2))
    async with gateway as address, connect(f"ws://{address}/ws/stream") as ws:
        for raw, code, field in BAD_INPUTS:
            await ws.send(raw)
            error = await recv(ws)
            assert error["type"] == "error", raw
            assert (error["error_code"], error["field"]) == (code, field), raw
            assert error["message"]
        for _ in range(2):
            assert (await subscribe(ws, stream_type="price", symbols=["AAPL"]))["type"] == (
                "subscription_ack"
            )
        error = await subscribe(ws, stream_type="price", symbols=["MSFT"])
        assert error["error_code"] == "TOO_MANY_SUBSCRIPTIONS"
        await feed.send("fiml.prices", price("AAPL", 3.0, T0, AssetType.EQUITY))
        assert (await recv_until(ws, is_type("data")))["data"][0]["price"] == 3.0


# --- faults: no record stops the hub; a dead hub says so -----------------------------------


async def test_a_record_with_an_interval_list_does_not_stop_live_data(gw: str, feed: Feed) -> None:
    """One record whose ``interval`` is a JSON list used to kill the hub: live data stopped for
    every client while /health said ok."""
    async with connect(f"ws://{gw}/ws/stream") as ws:
        await subscribe(ws, stream_type="price", symbols=["ETH/USDT"], mode="realtime")
        poison = [
            b'{"symbol": "ETH/USDT", "interval": ["1m"]}',
            b'{"symbol": ["x"]}',
            b'{"symbol": "ETH/USDT", "interval": {"a": 1}}',
            b"\xff\xfe",
            b"[]",
        ]
        for bad in poison:
            for topic in ("fiml.ohlcv", "fiml.prices"):
                await (await feed.producer.send(topic_name(topic), bad, key=b"ETH/USDT"))
        await feed.send("fiml.prices", price("ETH/USDT", 2001.0, T0))
        live = await recv_until(ws, is_type("data"))
        assert [d["price"] for d in live["data"]] == [2001.0]
    assert (await http_get(gw, "/health")).json()["status"] == "ok"
    metrics = (await http_get(gw, "/metrics")).text
    assert "fiml_gateway_decode_errors_total 10" in metrics, metrics


async def test_a_dead_hub_fails_health(settings: GatewaySettings) -> None:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    address = f"127.0.0.1:{listener.getsockname()[1]}"
    app = create_app(settings)
    hub = app.state.gateway.hub
    server = uvicorn.Server(
        uvicorn.Config(app, log_level="warning", lifespan="on", **uvicorn_options(settings))
    )
    served = asyncio.create_task(server.serve(sockets=[listener]))
    try:
        await until(lambda: server.started, "uvicorn started")
        assert (await http_get(address, "/health")).status_code == 200
        hub._task.cancel()  # the consume loop dies, as a bug would kill it
        await until(hub.failed.is_set, "the hub to report its death")
        health = await http_get(address, "/health")
        assert health.status_code == 503, health.text
        assert health.json()["status"] == "down" and health.json()["hub"] == "failed"
    finally:
        server.should_exit = True
        await asyncio.wait_for(served, DEADLINE)
        listener.close()
