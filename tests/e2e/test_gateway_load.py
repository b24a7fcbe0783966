"""Many clients and a slow one, against a real broker and uvicorn."""

# The fixtures are imported from the integration module, so test parameters "redefine" them.
# ruff: noqa: F811

from __future__ import annotations

import asyncio
import socket
from dataclasses import replace

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from gateway import GatewaySettings
from schemas.records import AssetType
from tests.integration.test_gateway import (  # noqa: F401
    T0,
    Feed,
    feed,
    gw,
    is_type,
    price,
    recv_until,
    running_gateway,
    settings,
    subscribe,
    topics,
    until,
)

pytestmark = pytest.mark.e2e


async def test_200_concurrent_clients_each_get_their_data(gw: str, feed: Feed) -> None:
    names = [f"Q{i}" for i in range(200)]
    clients = [await connect(f"ws://{gw}/ws/stream") for _ in names]
    try:
        for ws, name in zip(clients, names, strict=True):
            await subscribe(ws, stream_type="price", symbols=[name], mode="realtime")
        await feed.send("fiml.prices", *[price(n, 1.0 + i, T0, AssetType.EQUITY)
                                         for i, n in enumerate(names)])
        got = await asyncio.gather(*(recv_until(ws, is_type("data")) for ws in clients))
        for i, (message, name) in enumerate(zip(got, names, strict=True)):
            assert message["data"] == [
                {**message["data"][0], "symbol": name, "price": 1.0 + i}]
    finally:
        await asyncio.gather(*(ws.close() for ws in clients))


async def test_a_client_that_stops_reading_is_cut_off_without_hurting_others(
    settings: GatewaySettings, feed: Feed
) -> None:
    tuned = replace(settings, slow_client_timeout_s=0.5, close_timeout_s=30.0)
    async with running_gateway(tuned) as address:
        url = f"ws://{address}/ws/stream"
        # A tiny receive buffer so the server's send blocks after little data.
        sock = socket.create_connection(address.split(":"))  # type: ignore[arg-type]
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        async with connect(
            url, sock=sock, max_queue=1, compression=None, ping_interval=None
        ) as slow, connect(url) as fast:
            await subscribe(slow, stream_type="price", symbols=["BIG"], mode="realtime")
            await subscribe(fast, stream_type="price", symbols=["BIG"], snapshot=False,
                            interval_ms=100)
            client = httpx.AsyncClient(base_url=f"http://{address}")
            i = 0
            try:
                async def cut() -> bool:
                    status = (await client.get("/ws/connections")).json()
                    return bool(status["active_connections"] == 1)

                while not await cut():
                    i += 1
                    batch = [price("BIG", float(i * 2000 + k + 1), T0, AssetType.EQUITY)
                             for k in range(2000)]
                    await feed.send("fiml.prices", *batch)
                    last = batch[-1].price
                    # The reading client keeps getting the newest value promptly.
                    await recv_until(fast, lambda m, p=last: m["type"] == "data"
                                     and m["data"][-1]["price"] == p, deadline=10)
                    assert i < 60, "the slow client was never disconnected"
                metrics = (await client.get("/metrics")).text
                assert "fiml_gateway_slow_disconnects_total 1" in metrics
            finally:
                await client.aclose()
            # When it reads again it drains its backlog, then sees the reason. (A normal
            # receive buffer again: 4 KiB windows would take minutes to drain megabytes.)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    await asyncio.wait_for(slow.recv(), 30)
            assert closed.value.rcvd is not None
            assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4000, "client too slow")
