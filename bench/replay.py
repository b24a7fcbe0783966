"""Replay: records per second delivered to one WebSocket client replaying a retained topic.

    python bench/replay.py --records 100000 --symbols 10

PriceUpdate records (event times one hour in the past, Kafka timestamps equal to them) are
written to ``fiml.prices``; one client subscribes to every symbol with ``replay_from`` and
``replay_to`` spanning them and reads as fast as it can until ``replay_complete``. The rate is
records received over the time from the subscription to ``replay_complete``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

import orjson
import websockets

from bench.common import (
    MACHINE_NOTE,
    fiml,
    free_port,
    fresh_prefix,
    kafka,
    report,
    spawn,
    stop,
    wait_http,
)


async def fill(bootstrap: str, topic: str, symbols: list[str], n: int, start_ms: int) -> None:
    from aiokafka import AIOKafkaProducer

    from schemas.codec import encode
    from schemas.records import AssetType, PriceUpdate

    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=20, acks=1, max_batch_size=256 * 1024
    )
    await producer.start()
    try:
        for i in range(n):
            symbol = symbols[i % len(symbols)]
            t = start_ms + i * 10
            price = 100.0 + (i % 97) * 0.01
            record = PriceUpdate(
                symbol=symbol,
                asset_type=AssetType.EQUITY,
                price=price,
                confidence=0.9,
                band_low=price - 0.01,
                band_high=price + 0.01,
                providers_used=["a", "b"],
                event_time_ms=t,
                source_ticks=2,
                provider="a",
                day_open=100.0,
            )
            await producer.send(topic, encode(record), key=symbol.encode(), timestamp_ms=t)
        await producer.flush()
    finally:
        await producer.stop()


async def replay(url: str, symbols: list[str], start_ms: int, end_ms: int) -> tuple[int, float]:
    async with websockets.connect(url, max_size=None, compression=None) as ws:
        t0 = time.perf_counter()
        await ws.send(
            orjson.dumps(
                {
                    "type": "subscribe",
                    "stream_type": "price",
                    "symbols": symbols,
                    "mode": "realtime",
                    "snapshot": False,
                    "replay_from": start_ms,
                    "replay_to": end_ms,
                }
            )
        )
        received = 0
        while True:
            message = orjson.loads(await asyncio.wait_for(ws.recv(), timeout=120))
            if message["type"] == "data":
                received += len(message["data"])
            elif message["type"] == "replay_complete":
                return received, time.perf_counter() - t0
            elif message["type"] == "error":
                raise RuntimeError(message)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--symbols", type=int, default=10)
    args = parser.parse_args()
    symbols = [f"R{chr(65 + i // 26)}{chr(65 + i % 26)}" for i in range(args.symbols)]
    start_ms = int(time.time() * 1000) - 3_600_000
    end_ms = start_ms + args.records * 10
    with kafka() as bootstrap:
        from schemas.topics import topic_name

        prefix = fresh_prefix(bootstrap)
        asyncio.run(fill(bootstrap, topic_name("fiml.prices"), symbols, args.records, start_ms))
        port = free_port()
        env = dict(os.environ, KAFKA_BOOTSTRAP_SERVERS=bootstrap, FIML_TOPIC_PREFIX=prefix)
        gateway = spawn(fiml("gateway", "--port", str(port), "--no-deflate"), env)
        try:
            wait_http(f"http://127.0.0.1:{port}/health")
            received, seconds = asyncio.run(
                replay(f"ws://127.0.0.1:{port}/ws/stream", symbols, start_ms, end_ms)
            )
        finally:
            stop(gateway)
    if received != args.records:
        raise SystemExit(f"replay returned {received} records, expected {args.records}")
    report(
        "replay", {"replay_records_per_s": received / seconds}, records=received, note=MACHINE_NOTE
    )


if __name__ == "__main__":
    main()
