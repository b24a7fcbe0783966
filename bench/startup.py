"""Startup: seconds from `fiml up` to the first price at a WebSocket client.

    python bench/startup.py

Warm means the venv, the broker jars and the JIT-less Python caches are in place, and the
broker is already running (``KAFKA_BOOTSTRAP_SERVERS`` or the bench's own): what is timed is
topic provisioning, the three children starting (ingestion, arbitration, gateway), the
simulator's first ticks, consensus and delivery. Each run uses a fresh topic prefix, so no state
is reused between runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time

import orjson
import websockets

from bench.common import MACHINE_NOTE, fiml, free_port, kafka, report, spawn, stop


async def first_price(url: str, deadline: float) -> None:
    while time.monotonic() < deadline:
        try:
            async with websockets.connect(url, compression=None) as ws:
                await ws.send(
                    orjson.dumps(
                        {
                            "type": "subscribe",
                            "stream_type": "price",
                            "symbols": ["AAPL", "BTC/USDT"],
                            "mode": "realtime",
                        }
                    )
                )
                while time.monotonic() < deadline:
                    message = orjson.loads(await asyncio.wait_for(ws.recv(), timeout=60))
                    if message["type"] == "data" and message["data"]:
                        return
        except (OSError, websockets.WebSocketException):
            await asyncio.sleep(0.05)  # the gateway is not listening yet: poll again
    raise TimeoutError("no price within the deadline")


def one_run(bootstrap: str) -> float:
    import uuid

    port = free_port()
    env = dict(
        os.environ,
        KAFKA_BOOTSTRAP_SERVERS=bootstrap,
        FIML_TOPIC_PREFIX=f"up{uuid.uuid4().hex[:6]}.",
    )
    t0 = time.monotonic()
    up = spawn(fiml("up", "--headless", "--gateway-port", str(port)), env)
    try:
        asyncio.run(first_price(f"ws://127.0.0.1:{port}/ws/stream", t0 + 120))
        return time.monotonic() - t0
    finally:
        with contextlib.suppress(Exception):
            stop(up)


def main() -> None:
    with kafka() as bootstrap:
        seconds = one_run(bootstrap)
    report("startup", {"startup_to_first_price_s": seconds}, note=MACHINE_NOTE)


if __name__ == "__main__":
    main()
