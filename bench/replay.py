"""Replay: records per second delivered to one WebSocket client replaying a retained topic.

    python bench/replay.py --records 100000 --symbols 10

PriceUpdate records (event times one hour in the past, Kafka timestamps equal to them) are
written to ``fiml.prices``; one client subscribes to every symbol with ``replay_from`` and
``replay_to`` spanning them and reads as fast as it can until ``replay_complete``, once with
JSON data messages and once with msgpack ones (``?format=msgpack``). The rate is records
received over the time from the subscription to ``replay_complete``. The baseline, in the same
run, interleaved: a bare aiokafka consumer reading the same topic from start to end
(``bench.common.bare_read``), start-up included as the replay's is. Best of ``--rounds``. And
the rate at which one Python client decodes each kind of data message (its first one, timed
alone): the wire format's ceiling, beside what the gateway sends.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import time
import timeit
from collections.abc import Callable
from typing import Any

import orjson
import ormsgpack
import websockets

from bench.common import (
    MACHINE_NOTE,
    bare_read,
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


def replay_request(symbols: list[str], start_ms: int, end_ms: int, **extra: object) -> bytes:
    """The subscribe message of a bounded replay of prices, as fast as the client reads."""
    request = {
        "type": "subscribe",
        "stream_type": "price",
        "symbols": symbols,
        "mode": "realtime",
        "snapshot": False,
        "replay_from": start_ms,
        "replay_to": end_ms,
        **extra,
    }
    return orjson.dumps(request)


#: The first data message of each kind of replay, as received: what ``decode_rate`` times.
FIRST_FRAMES: dict[str, str | bytes] = {}


def decode_rate(frame: str | bytes) -> float:
    """Records a second one Python client decodes from frames like ``frame`` (best of 5):
    the wire format's own ceiling, whatever the gateway can send."""
    decode: Callable[[], Any] = (
        functools.partial(ormsgpack.unpackb, frame)
        if isinstance(frame, bytes)
        else functools.partial(orjson.loads, frame)
    )
    message = decode()
    count = message["count"] if "count" in message else len(message["data"])
    best = min(timeit.repeat(decode, number=50, repeat=5)) / 50
    return float(count / best)


async def replay(
    url: str, symbols: list[str], start_ms: int, end_ms: int, binary: bool = False
) -> tuple[int, float]:
    """Records received and seconds from the subscription to ``replay_complete``; with
    ``binary``, data messages come as msgpack frames and are decoded as such."""
    if binary:
        url += "?format=msgpack"
    async with websockets.connect(url, max_size=None, compression=None) as ws:
        t0 = time.perf_counter()
        await ws.send(replay_request(symbols, start_ms, end_ms))
        received = 0
        while True:
            raw = await asyncio.wait_for(ws.recv(), timeout=120)
            if not received:
                FIRST_FRAMES["msgpack" if binary else "json"] = raw
            message = ormsgpack.unpackb(raw) if isinstance(raw, bytes) else orjson.loads(raw)
            if message["type"] == "data":
                received += message["count"] if binary else len(message["data"])
            elif message["type"] == "replay_complete":
                return received, time.perf_counter() - t0
            elif message["type"] == "error":
                raise RuntimeError(message)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--symbols", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3, help="best of this many, interleaved")
    args = parser.parse_args()
    symbols = [f"R{chr(65 + i // 26)}{chr(65 + i % 26)}" for i in range(args.symbols)]
    # in the past, all of them: the broker refuses timestamps far in the future
    start_ms = int(time.time() * 1000) - max(3_600_000, args.records * 10 + 60_000)
    end_ms = start_ms + args.records * 10
    rates: dict[str, list[float]] = {"json": [], "msgpack": [], "bare": []}
    with kafka() as bootstrap:
        from schemas.topics import TOPICS, topic_name

        prefix = fresh_prefix(bootstrap)
        topic = topic_name("fiml.prices")
        asyncio.run(fill(bootstrap, topic, symbols, args.records, start_ms))
        port = free_port()
        env = dict(os.environ, KAFKA_BOOTSTRAP_SERVERS=bootstrap, FIML_TOPIC_PREFIX=prefix)
        gateway = spawn(fiml("gateway", "--port", str(port), "--no-deflate"), env)
        url = f"ws://127.0.0.1:{port}/ws/stream"
        try:
            wait_http(f"http://127.0.0.1:{port}/health")
            for _ in range(args.rounds):
                t0 = time.perf_counter()
                bare = asyncio.run(bare_read(bootstrap, topic, TOPICS["fiml.prices"].partitions))
                rates["bare"].append(bare / (time.perf_counter() - t0))
                for wire in ("json", "msgpack"):
                    got, seconds = asyncio.run(
                        replay(url, symbols, start_ms, end_ms, binary=wire == "msgpack")
                    )
                    if got != args.records:
                        raise SystemExit(f"replay returned {got} records, expected {args.records}")
                    rates[wire].append(got / seconds)
        finally:
            stop(gateway)
    best = {wire: max(values) for wire, values in rates.items()}
    report(
        "replay",
        {
            "replay_records_per_s": best["json"],
            "replay_msgpack_records_per_s": best["msgpack"],
            "replay_bare_records_per_s": best["bare"],
            "replay_ratio": best["json"] / best["bare"],
            "replay_msgpack_ratio": best["msgpack"] / best["bare"],
            "decode_json_records_per_s": decode_rate(FIRST_FRAMES["json"]),
            "decode_msgpack_records_per_s": decode_rate(FIRST_FRAMES["msgpack"]),
        },
        records=args.records,
        note=MACHINE_NOTE,
    )


if __name__ == "__main__":
    main()
