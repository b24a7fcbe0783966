"""``GET /ohlcv`` from the gateway's candle index against a real broker: the same answers as the
scan, a restart that resumes its file, rebuilds (retention, a new epoch, a file ahead of the
topic), records that are not candles, and requests for the present while the index is behind.
(tests/unit/gateway/test_candle_index.py has the index on its own.)"""

# The fixtures are imported from the sibling module, so test parameters "redefine" them.
# ruff: noqa: F811

from __future__ import annotations

import threading
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka.errors import KafkaConnectionError
from fastapi import FastAPI

from gateway import GatewaySettings, create_app
from gateway.candle_feed import CandleFeed
from gateway.candle_index import CandleIndex
from infra.topics import create_topics
from schemas.topics import topic_name
from tests.integration.test_gateway import (  # noqa: F401
    HOUR,
    T0,
    Feed,
    candle,
    feed,
    http_get,
    running_gateway,
    settings,
    topics,
    until,
)
from tests.integration.test_gateway_history import delete_everything
from tests.integration.test_rest_ohlcv import worker_order

pytestmark = pytest.mark.integration

MIN = 60_000
#: Ranges that end before the last window (closed: answered at once) and reach past it (open:
#: the index must have read the topic's end first).
RANGES = [
    f"start={T0}&end={T0 + 3 * MIN}",
    f"start={T0 + MIN}&end={T0 + HOUR}",
    f"start={T0 - HOUR}&end={T0 + 2 * HOUR}&limit=4",
    f"start={T0}&end={T0 + HOUR}&limit=1",
]


@pytest.fixture
def index_file(tmp_path: Path) -> Path:
    return tmp_path / "candles.sqlite3"


@pytest.fixture
def indexed(settings: GatewaySettings, index_file: Path) -> GatewaySettings:
    return replace(settings, candle_index=str(index_file))


async def index_health(address: str) -> dict[str, Any]:
    health: dict[str, Any] = (await http_get(address, "/health")).json()["candle_index"]
    return health


async def live(address: str) -> dict[str, Any]:
    async def is_live() -> dict[str, Any] | None:
        health = await index_health(address)
        assert health["state"] != "failed", health
        return health if health["state"] == "live" else None

    health: dict[str, Any] = await until(is_live, "the candle index to catch up")
    return health


async def answers(address: str, symbol: str = "XRP_USDT") -> list[dict[str, Any]]:
    out = []
    for query in RANGES:
        r = await http_get(address, f"/ohlcv/{symbol}?interval=1m&{query}")
        assert r.status_code == 200, r.text
        out.append(r.json())
    return out


async def scanned(settings: GatewaySettings, symbol: str = "XRP_USDT") -> list[dict[str, Any]]:
    """What a gateway without an index answers: the scan of the topic."""
    async with running_gateway(replace(settings, candle_index="off")) as scan:
        assert "candle_index" not in (await http_get(scan, "/health")).json()
        return await answers(scan, symbol)


def closes(body: dict[str, Any]) -> list[float]:
    return [c["close"] for c in body["candles"]]


async def test_the_index_answers_what_the_scan_answers(
    indexed: GatewaySettings, feed: Feed
) -> None:
    written = [*worker_order("XRP/USDT", 6), candle("XRP/USDT", T0 + 6 * MIN, 9.0)]
    await feed.send("fiml.ohlcv", *written, *worker_order("ADA/USDT", 4))
    async with running_gateway(indexed) as gw:
        health = await live(gw)
        assert (health["read"], health["skipped"]) == (len(written) + 8, 0)
        got = await answers(gw)
        # a limit outside 1..max_candles is refused with the reason
        for bad in ("limit=0", "limit=5001"):
            r = await http_get(gw, f"/ohlcv/XRP_USDT?{bad}")
            assert r.status_code == 422 and r.json()["detail"], r.text
    assert got == await scanned(indexed)
    assert closes(got[0]) == [200.0, 201.0, 202.0]
    assert got[2]["truncated"] and got[2]["next_end"] == T0 + 3 * MIN  # the newest four
    assert closes(got[3]) == [9.0]  # the open window, the newest revision


async def test_a_restarted_gateway_resumes_its_file(indexed: GatewaySettings, feed: Feed) -> None:
    await feed.send("fiml.ohlcv", *worker_order("XRP/USDT", 3))
    async with running_gateway(indexed) as gw:
        before = await answers(gw)
        assert (await live(gw))["read"] == 6
    # while no gateway runs: the next windows
    later = [candle("XRP/USDT", T0 + k * MIN, 300.0 + k, rev=1, final=True) for k in (3, 4)]
    await feed.send("fiml.ohlcv", *later)
    async with running_gateway(indexed) as gw:
        after = await answers(gw)
        # it read the two new records only: it resumed from the offsets in its file
        assert (await live(gw))["read"] == 2
    assert after == await scanned(indexed)
    assert closes(after[1]) == [*closes(before[1]), 303.0, 304.0]


async def test_retention_behind_a_stopped_gateway_is_applied_at_its_restart(
    indexed: GatewaySettings, feed: Feed, kafka_bootstrap: str
) -> None:
    await feed.send("fiml.ohlcv", *worker_order("XRP/USDT", 3))
    async with running_gateway(indexed) as gw:
        assert len((await answers(gw))[1]["candles"]) == 2
    await delete_everything(kafka_bootstrap, "fiml.ohlcv")
    kept_from = T0 + 10 * MIN
    # stamped at its event time, kept_from (rev 0)
    await feed.send("fiml.ohlcv", candle("XRP/USDT", kept_from, 50.0, final=True))
    async with running_gateway(indexed) as gw:
        got = await answers(gw)
    assert got == await scanned(indexed)
    assert closes(got[1]) == [50.0] and got[1]["retained_from"] == kept_from


async def test_retention_while_it_runs_is_applied_before_the_present_is_answered(
    indexed: GatewaySettings, feed: Feed, kafka_bootstrap: str
) -> None:
    async with running_gateway(indexed) as gw:
        await feed.send("fiml.ohlcv", *worker_order("XRP/USDT", 3))
        assert len((await answers(gw))[1]["candles"]) == 2
        await delete_everything(kafka_bootstrap, "fiml.ohlcv")
        r = await http_get(gw, f"/ohlcv/XRP_USDT?start={T0}&end={T0 + HOUR}")
        assert r.json()["candles"] == [] and r.json()["retained_from"] is None  # nothing left
        kept_from = T0 + 10 * MIN
        await feed.send("fiml.ohlcv", candle("XRP/USDT", kept_from, 50.0))
        r = await http_get(gw, f"/ohlcv/XRP_USDT?start={T0}&end={T0 + HOUR}")
    assert closes(r.json()) == [50.0] and r.json()["retained_from"] == kept_from


async def test_a_file_of_another_epoch_or_ahead_of_the_topic_is_rebuilt(
    indexed: GatewaySettings,
    feed: Feed,
    index_file: Path,
    kafka_bootstrap: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await feed.send("fiml.ohlcv", *worker_order("XRP/USDT", 3))
    async with running_gateway(indexed) as gw:
        await live(gw)
    # The derived topics rebuilt under another prefix (fiml rebuild): another epoch.
    monkeypatch.setenv("FIML_TOPIC_PREFIX", f"t{uuid.uuid4().hex[:8]}.")
    await create_topics(kafka_bootstrap)
    await feed.send("fiml.ohlcv", candle("XRP/USDT", T0 + MIN, 70.0, rev=1, final=True))
    async with running_gateway(indexed) as gw:
        assert (await live(gw))["read"] == 1
        got = await answers(gw)
    assert closes(got[1]) == [70.0]
    # A file that read further than the topic's end: the topic was deleted and made again.
    index = CandleIndex(index_file)
    index.ingest([], {0: 1_000_000})
    index.close()
    async with running_gateway(indexed) as gw:
        assert (await live(gw))["read"] == 1  # read again from the start
        assert await answers(gw) == got


async def test_records_that_are_not_candles_are_skipped_and_the_index_goes_on(
    indexed: GatewaySettings, feed: Feed
) -> None:
    topic = topic_name("fiml.ohlcv")
    async with running_gateway(indexed) as gw:
        await live(gw)
        good = candle("XRP/USDT", T0, 10.0, rev=1, final=True)
        for key, value in (
            (b"XRP/USDT", b"not json"),
            (b"XRP/USDT", None),  # a tombstone
            (b"BTC/USDT", good.model_dump_json().encode()),  # under another symbol's key
        ):
            await (await feed.producer.send(topic, value, key=key))
        await feed.send("fiml.ohlcv", good, candle("XRP/USDT", T0 + MIN, 20.0))
        r = await http_get(gw, f"/ohlcv/XRP_USDT?start={T0}&end={T0 + HOUR}")
        assert closes(r.json()) == [10.0, 20.0]
        health = await index_health(gw)
    assert (health["state"], health["read"], health["skipped"]) == ("live", 5, 3)


async def test_an_index_that_cannot_be_used_leaves_the_scan_to_answer(
    indexed: GatewaySettings, feed: Feed
) -> None:
    await feed.send("fiml.ohlcv", *worker_order("XRP/USDT", 3))
    async with running_gateway(indexed) as first, running_gateway(indexed) as second:
        await live(first)

        async def failed() -> dict[str, Any] | None:
            health = await index_health(second)
            return health if health["state"] == "failed" else None

        health = await until(failed, "the second gateway's index to give up the file")
        assert "in use by another gateway" in health["reason"]
        assert await answers(second) == await answers(first)  # the scan, and the index


@pytest.fixture
def held_writes(monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Event]:
    """Every write of the index waits (in its thread) until the event is set."""
    release = threading.Event()
    ingest = CandleIndex.ingest

    def held(self: CandleIndex, messages: Sequence[Any], positions: dict[int, int]) -> int:
        release.wait(30)
        return ingest(self, messages, positions)

    monkeypatch.setattr(CandleIndex, "ingest", held)
    try:
        yield release
    finally:
        release.set()


@pytest.fixture
async def app(indexed: GatewaySettings) -> AsyncIterator[FastAPI]:
    """The gateway's app, started in this process, its index waiting half a second at most."""
    application = create_app(replace(indexed, candle_index_wait_s=0.5))
    async with application.router.lifespan_context(application):
        yield application


async def test_the_present_is_a_503_while_the_index_has_not_read_it_and_the_past_is_not(
    app: FastAPI, feed: Feed, held_writes: threading.Event
) -> None:
    feed_: CandleFeed = app.state.gateway.candles
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        await until(lambda: feed_.state.value == "live", "the (empty) index to be live")
        await feed.send("fiml.ohlcv", *worker_order("XRP/USDT", 3))
        r = await client.get(f"/ohlcv/XRP_USDT?start={T0}&end={T0 + HOUR}")
        assert r.status_code == 503 and r.headers["Retry-After"] == "1", r.text
        assert "has not read" in r.json()["detail"]
        held_writes.set()
        r = await client.get(f"/ohlcv/XRP_USDT?start={T0}&end={T0 + HOUR}")
        assert r.status_code == 200 and closes(r.json()) == [200.0, 201.0, 202.0]
        # Behind again: a closed range (its last window is final) is answered all the same.
        held_writes.clear()
        await feed.send("fiml.ohlcv", candle("XRP/USDT", T0 + 3 * MIN, 5.0))
        r = await client.get(f"/ohlcv/XRP_USDT?start={T0}&end={T0 + 3 * MIN}")
        assert r.status_code == 200 and closes(r.json()) == [200.0, 201.0, 202.0]
        held_writes.set()


async def test_topic_offsets_that_cannot_be_had_are_a_503(
    app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    feed_: CandleFeed = app.state.gateway.candles

    async def unreachable() -> tuple[dict[int, int], dict[int, int]]:
        raise KafkaConnectionError("Unable to bootstrap")

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        await until(lambda: feed_.state.value == "live", "the (empty) index to be live")
        monkeypatch.setattr(feed_, "_topic_offsets", unreachable)
        r = await client.get(f"/ohlcv/XRP_USDT?start={T0}&end={T0 + HOUR}")
    assert r.status_code == 503, r.text
    assert r.json()["detail"].startswith("cannot read candles: KafkaConnectionError")
