"""Issue 17's liveness contract against a real broker and gateway: a subscription with
``status: true`` hears each symbol's status (live, stale, recovering) at subscribe and on each
change, and its providers' states from the arbitration's health records; its heartbeats carry
the newest event time. A subscription without it (a seed client) sees none of this."""

# The fixtures are imported from the sibling module, so test parameters "redefine" them.
# ruff: noqa: F811

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect

from gateway import GatewaySettings
from schemas.records import ProviderHealth
from tests.integration.test_gateway import (  # noqa: F401
    T0,
    Feed,
    feed,
    price,
    recv_until,
    running_gateway,
    settings,
    subscribe,
    topics,
    wait_cached,
)

pytestmark = pytest.mark.integration


async def status_of(ws: ClientConnection, wanted: str) -> dict[str, Any]:
    return await recv_until(ws, lambda m: m["type"] == "status" and m["status"] == wanted)


async def test_a_symbol_goes_stale_recovers_and_its_providers_states_are_pushed(
    settings: GatewaySettings, feed: Feed
) -> None:
    fast = replace(settings, heartbeat_s=0.4)  # the gateway's ticker runs every 0.1 s
    async with running_gateway(fast) as gw:
        for i in range(12):  # a price every 0.1 s: the expected interval is learned
            await feed.send("fiml.prices", price("LTC/USDT", 50.0 + i, T0 + i))
            await asyncio.sleep(0.1)  # the feed's pace, not synchronisation
        await wait_cached(gw, "LTC_USDT", 61.0)
        async with connect(f"ws://{gw}/ws/stream") as ws, connect(f"ws://{gw}/ws/stream") as seed:
            await subscribe(seed, stream_type="price", symbols=["LTC/USDT"], snapshot=False)
            ack = await subscribe(
                ws, stream_type="price", symbols=["LTC/USDT"], status=True, snapshot=False
            )
            assert ack["type"] == "subscription_ack"
            first = await recv_until(ws, lambda m: m["type"] == "status")
            assert (
                first["symbol"] == "LTC/USDT" and first["subscription_id"] == ack["subscription_id"]
            )
            # nothing more is published: stale within twice the interval (0.25 s at least)
            stale = await status_of(ws, "stale")
            assert stale["last_event_time_ms"] == T0 + 11
            assert 100 <= stale["expected_interval_ms"] <= 1_000
            beat = await recv_until(ws, lambda m: m["type"] == "heartbeat")
            assert beat["subscriptions"] == {ack["subscription_id"]: T0 + 11}
            # the worker says a provider went silent
            await feed.send(
                "fiml.provider.health",
                ProviderHealth(
                    provider="sim-a", state="down", symbol="LTC/USDT", event_time_ms=T0 + 12
                ),
            )
            down = await recv_until(ws, lambda m: m["type"] == "status" and m["providers"])
            assert down["providers"] == {"sim-a": "down"}
            # prices again: recovering, then live
            for i in range(12, 16):
                await feed.send("fiml.prices", price("LTC/USDT", 50.0 + i, T0 + i))
                await asyncio.sleep(0.05)  # the feed's pace, not synchronisation
            await status_of(ws, "recovering")
            live = await status_of(ws, "live")
            assert live["last_event_time_ms"] >= T0 + 14
            # the seed client's connection had data and heartbeats only, as the seed's
            seen = [await seed.recv() for _ in range(8)]  # heartbeats come every 0.4 s
            kinds = {m.split('"type":"')[1].split('"')[0] for m in map(str, seen)}
            assert kinds <= {"data", "heartbeat"} and kinds
            assert all('"subscriptions"' not in str(m) for m in seen)
