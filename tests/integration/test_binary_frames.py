"""Binary (msgpack) data frames against a real broker: a connection that asks for them, with
``?format=msgpack`` or a ``hello``, gets the same records, numbered the same, as a JSON one,
in binary frames, while every other message stays JSON text; replays, resumes and the Python
client work over them; and many replays at once all finish (the shared replay budget)."""

# The fixtures are imported from the sibling module, so test parameters "redefine" them.
# ruff: noqa: F811

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any

import orjson
import ormsgpack
import pytest
from websockets.asyncio.client import ClientConnection, connect

from fiml_stream import FimlStream, records_of
from gateway import GatewaySettings
from schemas.records import PriceUpdate
from tests.integration.test_gateway import (  # noqa: F401
    DEADLINE,
    HOUR,
    T0,
    Feed,
    feed,
    price,
    running_gateway,
    settings,
    topics,
    wait_cached,
)
from tests.unit.schemas.test_columns import FRAME_KEYS

pytestmark = pytest.mark.integration

#: Records in each replay: several data messages of ``BATCH`` records, the last one partial.
N = 2_000
BATCH = 128

Frame = tuple[dict[str, Any], bool]  # a message, and whether it came as a binary frame


@pytest.fixture
async def gw(settings: GatewaySettings) -> AsyncIterator[str]:
    """A gateway whose catch-ups send ``BATCH`` records a data message: many messages."""
    async with running_gateway(replace(settings, catchup_batch=BATCH)) as address:
        yield address


def history(symbol: str, n: int = N) -> list[PriceUpdate]:
    """``n`` prices of ``symbol`` within the hour from ``T0``, a second apart."""
    return [price(symbol, 1.0 + i / 8, T0 + i * 1_000) for i in range(n)]


def as_records(updates: list[PriceUpdate]) -> list[dict[str, Any]]:
    return [orjson.loads(u.model_dump_json()) for u in updates]


async def recv(ws: ClientConnection, deadline: float = DEADLINE) -> Frame:
    raw = await asyncio.wait_for(ws.recv(), deadline)
    if isinstance(raw, bytes):
        message: dict[str, Any] = ormsgpack.unpackb(raw)
        return message, True
    return orjson.loads(raw), False


async def recv_until(
    ws: ClientConnection, match: Callable[[dict[str, Any]], bool], deadline: float = DEADLINE
) -> Frame:
    """The first message matching ``match`` (others are skipped), text or binary."""
    end = time.monotonic() + deadline
    while True:
        message, binary = await recv(ws, max(0.01, end - time.monotonic()))
        if match(message):
            return message, binary


def of_type(*kinds: str) -> Callable[[dict[str, Any]], bool]:
    return lambda m: m["type"] in kinds


async def send(ws: ClientConnection, **fields: Any) -> None:
    await ws.send(orjson.dumps(fields).decode())


async def subscribe(ws: ClientConnection, **fields: Any) -> Frame:
    await send(ws, type="subscribe", **fields)
    return await recv_until(ws, of_type("subscription_ack", "error"))


async def hello(ws: ClientConnection, **fields: Any) -> Frame:
    await send(ws, type="hello", **fields)
    return await recv_until(ws, of_type("welcome"))


async def replay(ws: ClientConnection, symbol: str, sub_id: str) -> tuple[list[Frame], Frame]:
    """Replay the hour from ``T0`` of ``symbol``: its data messages and its replay_complete;
    fails on any error."""
    ack = await subscribe(
        ws,
        stream_type="price",
        symbols=[symbol],
        replay_from=T0,
        replay_to=T0 + HOUR,
        subscription_id=sub_id,
    )
    assert ack[0]["type"] == "subscription_ack", ack
    assert not ack[1], "an ack is JSON text"
    frames: list[Frame] = []
    while True:
        message, binary = await recv_until(ws, of_type("data", "replay_complete", "error"))
        assert message["type"] != "error", message
        if message["type"] == "replay_complete":
            return frames, (message, binary)
        frames.append((message, binary))


def check_binary_message(message: dict[str, Any]) -> None:
    """The keys of a binary data message, its columns all ``count`` long."""
    assert set(message) == FRAME_KEYS
    assert message["count"] > 0
    assert all(len(c) == message["count"] for c in message["columns"].values())


async def test_a_replay_over_msgpack_is_the_json_replay_in_binary_frames(
    gw: str, feed: Feed
) -> None:
    written = history("SOL/USDT")
    await feed.send("fiml.prices", *written, price("BTC/USDT", 2.0, T0 + 5))
    async with connect(f"ws://{gw}/ws/stream") as ws:
        as_json, done_json = await replay(ws, "SOL/USDT", "r")
    async with connect(f"ws://{gw}/ws/stream?format=msgpack") as ws:
        as_msgpack, done_msgpack = await replay(ws, "SOL/USDT", "r")
    expected = as_records(written)
    assert [r for m, _ in as_json for r in records_of(m)] == expected
    assert [r for m, _ in as_msgpack for r in records_of(m)] == expected
    assert len(as_json) > 1 and len(as_msgpack) == len(as_json)
    assert [m["seq"] for m, _ in as_msgpack] == [m["seq"] for m, _ in as_json]
    assert [m["seq"] for m, _ in as_json] == list(range(1, len(as_json) + 1))
    assert [m["count"] for m, _ in as_msgpack] == [len(m["data"]) for m, _ in as_json]
    assert not any(binary for _, binary in as_json) and all(binary for _, binary in as_msgpack)
    for message, _ in as_msgpack:
        check_binary_message(message)
        assert message["subscription_id"] == "r" and message["stream_type"] == "price"
    # controls are JSON text on both
    assert not done_json[1] and not done_msgpack[1]
    assert done_json[0]["records"] == done_msgpack[0]["records"] == N


async def test_hello_switches_data_messages_to_msgpack_and_back(gw: str, feed: Feed) -> None:
    await feed.send("fiml.prices", price("ETH/USDT", 100.0, T0))
    await wait_cached(gw, "ETH_USDT", 100.0)
    async with connect(f"ws://{gw}/ws/stream") as ws:
        welcome, binary = await hello(ws)
        assert welcome["format"] == "json" and not binary
        welcome, binary = await hello(ws, format="msgpack")
        assert welcome["format"] == "msgpack" and not binary  # the welcome itself is text
        ack, binary = await subscribe(
            ws, stream_type="price", symbols=["ETH/USDT"], mode="realtime", subscription_id="rt"
        )
        assert ack["type"] == "subscription_ack" and not binary
        snapshot, binary = await recv_until(ws, of_type("data"))
        assert binary and snapshot["seq"] == 1
        check_binary_message(snapshot)
        assert [r["price"] for r in records_of(snapshot)] == [100.0]
        # a conflated subscription's flushes are binary too
        ack, binary = await subscribe(
            ws, stream_type="price", symbols=["ETH/USDT"], interval_ms=100, subscription_id="cf"
        )
        assert ack["type"] == "subscription_ack" and not binary
        await feed.send("fiml.prices", price("ETH/USDT", 101.0, T0 + 1))
        live: dict[str, Frame] = {}
        while not all(
            sub in live and records_of(live[sub][0])[-1]["price"] == 101.0 for sub in ("rt", "cf")
        ):
            message, binary = await recv_until(ws, of_type("data"))
            live[message["subscription_id"]] = (message, binary)
        assert all(binary for _, binary in live.values())
        assert live["rt"][0]["seq"] == 2
        welcome, binary = await hello(ws, format="json")
        assert welcome["format"] == "json" and not binary
        await feed.send("fiml.prices", price("ETH/USDT", 102.0, T0 + 2))
        message, binary = await recv_until(ws, lambda m: m.get("subscription_id") == "rt")
        assert message["type"] == "data" and not binary
        assert message["seq"] == 3 and [r["price"] for r in message["data"]] == [102.0]
        # a hello without a format leaves it as it is
        welcome, _ = await hello(ws)
        assert welcome["format"] == "json"
    async with connect(f"ws://{gw}/ws/stream?format=msgpack") as ws:
        welcome, _ = await hello(ws)
        assert welcome["format"] == "msgpack"  # as the URL asked
        welcome, _ = await hello(ws, format="json")
        assert welcome["format"] == "json"


async def test_an_unknown_format_is_refused_and_the_connection_stays_json(
    gw: str, feed: Feed
) -> None:
    await feed.send("fiml.prices", price("DOGE/USDT", 0.1, T0))
    await wait_cached(gw, "DOGE_USDT", 0.1)
    async with connect(f"ws://{gw}/ws/stream?format=xml") as ws:
        error, binary = await recv(ws)
        assert error["type"] == "error" and not binary
        assert error["field"] == "format" and "xml" in error["message"]
        ack, _ = await subscribe(
            ws, stream_type="price", symbols=["DOGE/USDT"], mode="realtime", subscription_id="d"
        )
        assert ack["type"] == "subscription_ack"
        snapshot, binary = await recv_until(ws, of_type("data"))
        assert not binary and [r["price"] for r in snapshot["data"]] == [0.1]
        await feed.send("fiml.prices", price("DOGE/USDT", 0.2, T0 + 1))
        live, binary = await recv_until(ws, of_type("data"))
        assert not binary and [r["price"] for r in live["data"]] == [0.2]
        welcome, _ = await hello(ws)
        assert welcome["format"] == "json"
    async with connect(f"ws://{gw}/ws/stream?format=json") as ws:  # json, said: no error
        welcome, _ = await hello(ws)
        assert welcome["format"] == "json"


async def test_a_resume_over_a_binary_connection_delivers_exactly_the_missed_records(
    gw: str, feed: Feed
) -> None:
    sub = {
        "stream_type": "price",
        "symbols": ["ADA/USDT"],
        "mode": "realtime",
        "subscription_id": "resume-me",
    }
    async with connect(f"ws://{gw}/ws/stream?format=msgpack") as ws:
        ack, _ = await subscribe(ws, **sub, snapshot=False)
        assert ack["type"] == "subscription_ack"
        await feed.send("fiml.prices", *[price("ADA/USDT", float(i), T0 + i) for i in range(1, 6)])
        seen: list[Frame] = []
        while sum(m["count"] for m, _ in seen) < 5:
            seen.append(await recv_until(ws, of_type("data")))
    assert all(binary and m["resume_token"] for m, binary in seen)
    last = seen[-1][0]
    # missed while away: 6..10, among other records
    missed = [price("ADA/USDT", float(i), T0 + i) for i in range(6, 11)]
    await feed.send("fiml.prices", *missed, price("BTC/USDT", 3.0, T0))
    await wait_cached(gw, "BTC_USDT", 3.0)  # the hub has read past them
    async with connect(f"ws://{gw}/ws/stream?format=msgpack") as ws:
        ack, binary = await subscribe(
            ws, **sub, resume_from=last["seq"], resume_token=last["resume_token"]
        )
        assert ack["type"] == "subscription_ack" and ack["resumed_from"] == last["seq"]
        assert not binary
        caught_up: list[Frame] = []
        while sum(m["count"] for m, _ in caught_up) < 5:
            caught_up.append(await recv_until(ws, of_type("data")))
        assert all(binary for _, binary in caught_up)
        assert [m["seq"] for m, _ in caught_up] == list(
            range(last["seq"] + 1, last["seq"] + 1 + len(caught_up))
        )
        assert [r for m, _ in caught_up for r in records_of(m)] == as_records(missed)
        await feed.send("fiml.prices", price("ADA/USDT", 11.0, T0 + 11))
        live, binary = await recv_until(ws, of_type("data"))
        assert binary and live["seq"] == caught_up[-1][0]["seq"] + 1
        assert [r["price"] for r in records_of(live)] == [11.0]


async def test_the_client_replays_in_binary_frames(gw: str, feed: Feed) -> None:
    written = history("XRP/USDT")
    await feed.send("fiml.prices", *written, price("XRP/USDT", 9.0, T0 + HOUR))
    expected = as_records(written)
    for binary in (True, False):
        client = FimlStream(f"http://{gw}", binary=binary)
        got = [r async for r in client.replay("price", ["XRP/USDT"], T0, T0 + HOUR)]
        assert got == expected, binary
        columns: dict[str, list[Any]] = {}
        async for batch in client.replay_columns("price", ["XRP/USDT"], T0, T0 + HOUR):
            assert len({len(c) for c in batch.values()}) == 1
            for key, values in batch.items():
                columns.setdefault(key, []).extend(values)
        assert records_of({"columns": columns}) == expected, binary


async def test_many_replays_at_once_all_finish_with_every_record(
    settings: GatewaySettings, gw: str, feed: Feed
) -> None:
    clients = 6
    assert clients <= settings.max_replays  # none is refused for lack of a slot
    written = history("LTC/USDT")
    await feed.send("fiml.prices", *written)
    expected = as_records(written)

    async def one(i: int) -> list[dict[str, Any]]:
        wire = "?format=msgpack" if i % 2 else ""
        async with connect(f"ws://{gw}/ws/stream{wire}") as ws:
            frames, (done, _) = await replay(ws, "LTC/USDT", f"many-{i}")
        assert all(binary == bool(i % 2) for _, binary in frames)
        assert done["records"] == N
        return [r for m, _ in frames for r in records_of(m)]

    results = await asyncio.gather(*(one(i) for i in range(clients)))
    assert all(got == expected for got in results)


async def test_a_hello_during_a_replay_leaves_the_replay_in_its_format(gw: str, feed: Feed) -> None:
    """A catch-up keeps the format it started in: a ``hello`` that switches formats half-way
    through applies to data after it, and no frame is sent as the other kind (a msgpack frame
    as text broke the connection; a JSON one as binary decoded as garbage)."""
    written = history("ADA/USDT")
    await feed.send("fiml.prices", *written)
    async with connect(f"ws://{gw}/ws/stream") as ws:
        ack = await subscribe(
            ws,
            stream_type="price",
            symbols=["ADA/USDT"],
            replay_from=T0,
            replay_to=T0 + HOUR,
            subscription_id="r",
        )
        assert ack[0]["type"] == "subscription_ack"
        frames = [await recv_until(ws, of_type("data"))]
        await send(ws, type="hello", format="msgpack")
        while True:
            message, binary = await recv_until(ws, of_type("data", "replay_complete", "error"))
            assert message["type"] != "error", message
            if message["type"] == "replay_complete":
                break
            frames.append((message, binary))
    assert not any(binary for _, binary in frames)  # JSON from its start to its end
    assert [r for m, _ in frames for r in records_of(m)] == as_records(written)
    assert [m["seq"] for m, _ in frames] == list(range(1, len(frames) + 1))
