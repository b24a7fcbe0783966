"""The Python client (fiml_stream) against real gateways and a real broker: it resumes across
a gateway restart with every record exactly once, and reports refusals plainly."""

# The fixtures are imported from the sibling module, so test parameters "redefine" them.
# ruff: noqa: F811

from __future__ import annotations

import asyncio
import socket

import pytest

from fiml_stream import Backoff, FimlStream, FimlStreamError
from gateway import GatewaySettings
from schemas.records import PriceUpdate
from tests.integration.test_gateway import (  # noqa: F401
    T0,
    Feed,
    feed,
    gw,
    price,
    running_gateway,
    settings,
    topics,
    until,
    wait_cached,
)

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def test_watch_prices_resumes_across_a_gateway_restart_with_nothing_lost(
    settings: GatewaySettings, feed: Feed
) -> None:
    """Prices 1-10 while the first gateway runs; it stops; 11-15 are published while no
    gateway runs; a second one starts on the same address; 16-20. The client sees 1-20, each
    once and in order, having resumed (not subscribed afresh)."""
    port = free_port()
    url = f"ws://127.0.0.1:{port}"
    client = FimlStream(url, backoff=Backoff(base_s=0.05, cap_s=0.5), seed=1)
    got: list[PriceUpdate] = []

    async def consume() -> None:
        prices = client.watch_prices(["XRP/USDT"], snapshot=False, subscription_id="xrp")
        async for update in prices:
            got.append(update)
            if len(got) == 20:
                break
        await prices.aclose()

    async with running_gateway(settings, port=port):
        task = asyncio.create_task(consume())
        await until(lambda: "xrp" in client.stats and client.stats["xrp"].connects, "subscribed")
        await feed.send("fiml.prices", *[price("XRP/USDT", float(i), T0 + i) for i in range(1, 11)])
        await until(lambda: len(got) == 10, "the first ten prices")
    await feed.send("fiml.prices", *[price("XRP/USDT", float(i), T0 + i) for i in range(11, 16)])
    async with running_gateway(settings, port=port) as second:
        await until(lambda: client.stats["xrp"].resumes >= 1, "the client to resume")
        await wait_cached(second, "XRP_USDT", 15.0)
        await feed.send(
            "fiml.prices", *[price("XRP/USDT", float(i), T0 + i) for i in range(16, 21)]
        )
        await asyncio.wait_for(task, 30)
    assert [p.price for p in got] == [float(i) for i in range(1, 21)]
    stats = client.stats["xrp"]
    assert stats.gaps == 0 and stats.connects == 2 and stats.resumes == 1
    assert stats.records == 20


async def test_a_refused_subscription_raises_with_the_gateways_reason(gw: str) -> None:
    client = FimlStream(f"ws://{gw}")
    prices = client.watch_prices(["NOT A SYMBOL!!"])
    with pytest.raises(FimlStreamError) as refused:
        await anext(prices)
    assert refused.value.code in ("UNKNOWN_SYMBOL", "SUBSCRIPTION_ERROR")


async def test_an_unreachable_gateway_is_reported_after_the_attempts_allowed() -> None:
    client = FimlStream(
        f"ws://127.0.0.1:{free_port()}", backoff=Backoff(0.01, 0.05), max_attempts=3
    )
    with pytest.raises(FimlStreamError, match="cannot reach the gateway") as failed:
        await anext(client.watch_prices(["BTC/USDT"]))
    assert failed.value.code == "UNREACHABLE"


async def test_a_position_deleted_by_retention_becomes_a_counted_gap_not_a_stall(
    settings: GatewaySettings, feed: Feed, kafka_bootstrap: str
) -> None:
    """The gateway acknowledges the resume, then finds the records gone and drops the
    subscription: the client subscribes afresh (with a snapshot), counts one gap, and goes on;
    it does not sit on a connection with nothing subscribed."""
    from tests.integration.test_gateway_history import delete_everything

    port = free_port()
    client = FimlStream(f"ws://127.0.0.1:{port}", backoff=Backoff(0.05, 0.5), seed=2)
    got: list[float] = []

    async def consume() -> None:
        prices = client.watch_prices(["XRP/USDT"], snapshot=False, subscription_id="xrp")
        async for update in prices:
            got.append(update.price)
            if update.price >= 30.0:
                break
        await prices.aclose()

    async with running_gateway(settings, port=port):
        task = asyncio.create_task(consume())
        await until(lambda: "xrp" in client.stats and client.stats["xrp"].connects, "subscribed")
        await feed.send("fiml.prices", price("XRP/USDT", 1.0, T0 + 1))
        await until(lambda: got == [1.0], "the first price")
    await feed.send("fiml.prices", *[price("XRP/USDT", float(i), T0 + i) for i in range(2, 5)])
    await delete_everything(kafka_bootstrap, "fiml.prices")  # what retention does
    await feed.send("fiml.prices", price("XRP/USDT", 20.0, T0 + 20))
    async with running_gateway(settings, port=port) as second:
        await wait_cached(second, "XRP_USDT", 20.0)
        await until(lambda: client.stats["xrp"].gaps == 1, "the gap to be counted")
        await until(lambda: client.stats["xrp"].connects >= 2, "a fresh subscription")
        await feed.send("fiml.prices", price("XRP/USDT", 30.0, T0 + 30))
        await asyncio.wait_for(task, 30)
    assert got[0] == 1.0 and got[-1] == 30.0 and 2.0 not in got  # the deleted ones never came
    assert any("RESUME_UNAVAILABLE" in e for e in client.stats["xrp"].errors)
