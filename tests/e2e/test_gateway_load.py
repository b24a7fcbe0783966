"""Many clients and a slow one, against a real broker and uvicorn."""

# The fixtures are imported from the integration module, so test parameters "redefine" them.
# ruff: noqa: F811

from __future__ import annotations

import asyncio
import itertools
import socket
import time
from dataclasses import replace

import httpx
import orjson
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
        await feed.send(
            "fiml.prices", *[price(n, 1.0 + i, T0, AssetType.EQUITY) for i, n in enumerate(names)]
        )
        got = await asyncio.gather(*(recv_until(ws, is_type("data")) for ws in clients))
        for i, (message, name) in enumerate(zip(got, names, strict=True)):
            assert message["data"] == [{**message["data"][0], "symbol": name, "price": 1.0 + i}]
    finally:
        await asyncio.gather(*(ws.close() for ws in clients))


async def test_a_client_that_stops_reading_is_cut_off_without_hurting_others(
    settings: GatewaySettings, feed: Feed
) -> None:
    """Small buffers everywhere so that kilobytes, not megabytes, block the slow client.

    The server's kernel send buffer (set on the listening socket) and the slow client's receive
    buffer are 4 KiB; the gateway holds at most 20 pending updates a subscription and 8 queued
    frames; a send blocked for 1 s gets the client cut. A producer writes small price records
    to one symbol as fast as it can; both clients are in real-time mode.
    """
    tuned = replace(
        settings,
        max_pending_updates=20,
        max_queued_frames=8,
        slow_client_timeout_s=1.0,
        close_timeout_s=10.0,
        heartbeat_s=0.25,
    )
    async with (
        running_gateway(tuned, sndbuf=4096) as address,
        httpx.AsyncClient(base_url=f"http://{address}") as http,
    ):
        url = f"ws://{address}/ws/stream"
        host, port = address.split(":")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: the window
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
        slow = await connect(url, sock=sock, max_queue=1, compression=None, ping_interval=None)
        fast = await connect(url, compression=None)
        produced = 0
        arrivals: list[tuple[float, float]] = []  # (monotonic time, newest price) at the fast one

        async def produce() -> None:
            nonlocal produced
            while True:
                await feed.send(
                    "fiml.prices",
                    *[
                        price("HOT", float(produced + k + 1), T0, AssetType.EQUITY)
                        for k in range(200)
                    ],
                )
                produced += 200

        async def read_fast() -> None:
            async for raw in fast:
                message = orjson.loads(raw)
                if message["type"] == "data":
                    arrivals.append((time.monotonic(), message["data"][-1]["price"]))

        tasks: list[asyncio.Task[None]] = []
        try:
            await subscribe(
                slow,
                stream_type="price",
                symbols=["HOT"],
                mode="realtime",
                snapshot=False,
                subscription_id="slow",
            )
            await subscribe(
                fast,
                stream_type="price",
                symbols=["HOT"],
                mode="realtime",
                snapshot=False,
                subscription_id="fast",
            )
            # From here on the slow client reads nothing (its library stops after one frame).
            tasks = [asyncio.create_task(read_fast()), asyncio.create_task(produce())]
            peak = {"pending_updates": 0, "queued_frames": 0}
            seen_blocked_at: int | None = None  # fast arrivals when the slow send was blocked
            end = time.monotonic() + 15
            while True:
                status = (await http.get("/ws/connections", params={"details": True})).json()
                slow_conn = [
                    c
                    for c in status["connections"]
                    if [s["subscription_id"] for s in c["subscriptions"]] == ["slow"]
                ]
                for conn in status["connections"]:
                    for key in peak:
                        peak[key] = max(peak[key], conn[key])
                if not slow_conn:
                    break
                if seen_blocked_at is None and slow_conn[0]["send_blocked_s"] > 0:
                    seen_blocked_at = len(arrivals)
                assert time.monotonic() < end, "the slow client was never disconnected"
                await asyncio.sleep(0.05)  # polling interval of the observer, not a sync point
            tasks.pop().cancel()  # stop producing
            final = float(produced)
            # Cut on the server side: gone from /ws/connections, counted in /metrics, and the
            # gateway never held more for any connection than its bounds.
            assert status["active_connections"] == 1
            metrics = (await http.get("/metrics")).text
            assert "fiml_gateway_slow_disconnects_total 1.0\n" in metrics
            assert peak["pending_updates"] <= tuned.max_pending_updates, peak
            assert peak["queued_frames"] <= tuned.max_queued_frames, peak
            # The reading client got data while the slow one's send was blocked, and gets the
            # newest value after the cut; its data never stopped for long.
            assert seen_blocked_at is not None, "the slow client's send never blocked"
            await until(lambda: arrivals and arrivals[-1][1] >= final, "the newest price")
            assert len(arrivals) > seen_blocked_at + 1, "no data reached the fast client"
            gaps = [b[0] - a[0] for a, b in itertools.pairwise(arrivals)]
            assert max(gaps) < 5.0, "the reading client's data stalled"
            # The close frame queues behind what the slow client has not read: reading again,
            # it drains a few kilobytes, then gets the reason. Had it not read within
            # close_timeout_s, the server would have aborted the TCP connection (1006 here):
            # the server-side checks above are what the test relies on, this one is a bonus
            # that holds when the client drains in time, as here.
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    await asyncio.wait_for(slow.recv(), 15)
            received = closed.value.rcvd
            if received is not None:
                assert (received.code, received.reason) == (4000, "client too slow")
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await asyncio.gather(slow.close(), fast.close(), return_exceptions=True)
