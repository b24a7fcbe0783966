"""Issue 17: the snapshot cache survives a gateway restart for quiet symbols too. A symbol whose
last price is far behind the last ``warm_records`` of its partition is read back in the
background, so ``/prices/{symbol}`` and the first snapshot do not 404 for a symbol that has a
price; with the read-back off, the same gateway does (the test can fail)."""

# The fixtures are imported from the sibling module, so test parameters "redefine" them.
# ruff: noqa: F811

from __future__ import annotations

from dataclasses import replace

import pytest
from websockets.asyncio.client import connect

from gateway import GatewaySettings
from schemas.codec import encode
from schemas.topics import topic_name
from tests.integration.test_gateway import (  # noqa: F401
    T0,
    Feed,
    feed,
    http_get,
    is_type,
    price,
    recv_until,
    running_gateway,
    settings,
    subscribe,
    topics,
    until,
    wait_cached,
)

pytestmark = pytest.mark.integration


async def test_a_quiet_symbol_keeps_its_snapshot_across_a_restart(
    settings: GatewaySettings, feed: Feed
) -> None:
    quiet = price("DOGE/USDT", 0.25, T0)
    prices = topic_name("fiml.prices")
    sent = await (await feed.producer.send(prices, encode(quiet), key=b"DOGE/USDT"))
    # then 30 prices of another symbol in the same partition: DOGE is far behind the warm window
    for i in range(30):
        busy = price("ETH/USDT", 3_000.0 + i, T0 + 1 + i)
        await feed.producer.send(prices, encode(busy), key=b"ETH/USDT", partition=sent.partition)
    await feed.producer.flush()
    narrow = replace(settings, warm_records=5)
    async with running_gateway(replace(narrow, backfill_records=0)) as forgetful:
        await wait_cached(forgetful, "ETH_USDT", 3_029.0)
        assert (await http_get(forgetful, "/prices/DOGE_USDT")).status_code == 404
    async with running_gateway(narrow) as gw:
        await wait_cached(gw, "DOGE_USDT", 0.25)  # read back, behind the warm window
        await wait_cached(gw, "ETH_USDT", 3_029.0)  # and the newest value of the busy one
        async with connect(f"ws://{gw}/ws/stream") as ws:
            await subscribe(ws, stream_type="price", symbols=["DOGE/USDT"], mode="realtime")
            snap = await recv_until(ws, is_type("data"))
            assert [d["price"] for d in snap["data"]] == [0.25]
