"""End-to-end latency: a raw tick's production to its arbitrated price at a WebSocket client.

    python bench/latency.py --rates 1000,5000 --symbols 50 --clients 100 --duration 15

The real path: producer -> fiml.raw -> arbitration worker -> fiml.prices -> gateway ->
clients in the gateway's realtime mode (no conflation). Each client subscribes to one symbol
(so 50 symbols x 100 clients is two clients a symbol). The producer stamps each tick with the
wall clock as it sends it; clients subtract that from the arrival time. Event times are whole
milliseconds, so each sample carries up to 1 ms of truncation (it reads high, never low).

At each offered rate the script reports p50, p99 and p99.9 in ms, and the delivered rate; the
highest rate whose p99 stays under 50 ms is reported as ``max_rate_p99_under_50ms``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import tempfile
import time
import uuid
from pathlib import Path

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

PROVIDERS = ("sim-a", "sim-b", "sim-c")


def symbol_names(n: int) -> list[str]:
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    return [f"L{letters[i // 26]}{letters[i % 26]}" for i in range(n)]


async def produce(bootstrap: str, topic: str, symbols: list[str], rate: int, until: float) -> int:
    """Send ``rate`` ticks a second, round-robin over symbols and providers, until ``until``."""
    from aiokafka import AIOKafkaProducer

    from schemas.codec import encode
    from schemas.records import AssetType, RawTick

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=1, acks=1)
    await producer.start()
    prices = dict.fromkeys(symbols, 100.0)
    rng = random.Random(7)
    sent, seq, slot = 0, 0, 0.01  # send in 10 ms slots
    try:
        next_at = time.time()
        while time.time() < until:
            for _ in range(max(1, round(rate * slot))):
                symbol = symbols[sent % len(symbols)]
                provider = PROVIDERS[(sent // len(symbols)) % len(PROVIDERS)]
                prices[symbol] *= 1 + rng.gauss(0, 1e-4)
                now_ms = int(time.time() * 1000)
                seq += 1
                tick = RawTick(
                    provider=provider,
                    symbol=symbol,
                    provider_symbol=symbol,
                    asset_type=AssetType.EQUITY,
                    price=prices[symbol] * (1 + rng.gauss(0, 5e-5)),
                    event_time_ms=now_ms,
                    ingest_time_ms=now_ms,
                    seq=seq,
                )
                await producer.send(topic, encode(tick), key=symbol.encode())
                sent += 1
            next_at += slot
            await asyncio.sleep(max(0.0, next_at - time.time()))
        await producer.flush()
    finally:
        await producer.stop()
    return sent


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, int(q * len(sorted_values)))
    return sorted_values[index]


def measure(
    bootstrap: str,
    url: str,
    symbols: list[str],
    rate: int,
    clients: int,
    duration: float,
    tmp: Path,
) -> dict[str, float]:
    from schemas.topics import topic_name

    warmup = 3.0
    start = time.time() + warmup + 2.0  # clients connect during the first 2 s
    end = start + duration
    procs, outs = [], []
    per_process = max(1, clients // 4)
    for offset in range(0, clients, per_process):
        out = tmp / f"lat-{rate}-{offset}.json"
        outs.append(out)
        procs.append(
            spawn(
                [
                    sys.executable,
                    "-m",
                    "bench.latency_client",
                    "--url",
                    url,
                    "--symbols",
                    ",".join(symbols),
                    "--clients",
                    str(min(per_process, clients - offset)),
                    "--offset",
                    str(offset),
                    "--start",
                    str(start),
                    "--end",
                    str(end + 1.0),
                    "--out",
                    str(out),
                ],
                dict(os.environ),
            )
        )
    try:
        time.sleep(2.0)  # let the clients subscribe before load starts (not a sync point)
        sent = asyncio.run(produce(bootstrap, topic_name("fiml.raw"), symbols, rate, end))
        for proc in procs:
            proc.wait(timeout=duration + 60)
    finally:
        stop(*procs)
    samples = sorted(v for out in outs if out.exists() for v in json.loads(out.read_text()))
    return {
        "offered_ticks_per_s": rate,
        "produced": sent,
        "delivered_per_s": len(samples) / duration,
        "p50_ms": percentile(samples, 0.50),
        "p99_ms": percentile(samples, 0.99),
        "p999_ms": percentile(samples, 0.999),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="1000,5000")
    parser.add_argument("--symbols", type=int, default=50)
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--duration", type=float, default=15.0)
    args = parser.parse_args()
    symbols = symbol_names(args.symbols)
    with kafka() as bootstrap, tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        prefix = fresh_prefix(bootstrap)
        env = dict(
            os.environ,
            KAFKA_BOOTSTRAP_SERVERS=bootstrap,
            FIML_TOPIC_PREFIX=prefix,
            FIML_ARB_APP_ID=f"bench-arb-{uuid.uuid4().hex[:6]}",
            FIML_ARB_DATADIR=str(tmp / "arb"),
        )
        port = free_port()
        worker = spawn(fiml("arbitrate"), env, tmp / "worker.log")
        gateway = spawn(fiml("gateway", "--port", str(port), "--no-deflate"), env, tmp / "gw.log")
        try:
            wait_http(f"http://127.0.0.1:{port}/health")
            url = f"ws://127.0.0.1:{port}/ws/stream"
            points = [
                measure(bootstrap, url, symbols, int(rate), args.clients, args.duration, tmp)
                for rate in args.rates.split(",")
            ]
        finally:
            stop(worker, gateway)
    under = [p["offered_ticks_per_s"] for p in points if p["p99_ms"] < 50]
    metrics = {}
    for p in points:
        rate = int(p["offered_ticks_per_s"])
        for key in ("p50_ms", "p99_ms", "p999_ms", "delivered_per_s"):
            metrics[f"latency_{rate}_{key}"] = p[key]
    metrics["max_rate_p99_under_50ms"] = max(under) if under else 0.0
    report(
        "latency",
        metrics,
        points=points,
        clients=args.clients,
        symbols=args.symbols,
        note=MACHINE_NOTE,
    )


if __name__ == "__main__":
    main()
