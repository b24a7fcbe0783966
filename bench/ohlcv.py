"""GET /ohlcv: one symbol's last day of 1m candles from the candle index, against the scan.

    python -m bench.ohlcv --symbols 10 --days 1,7 --requests 20

For each history length (``--days``), fresh topics get that many days of 1m candles for
``--symbols`` symbols, written as the worker writes them: three revisions a window (two open
ones stamped 20 s and 40 s into the window, the final one 2 s after its end), in time order,
the current window still open. Then two ``fiml gateway`` processes read them: one with its
candle index (the product), one with ``FIML_GATEWAY_CANDLE_INDEX=off`` (the baseline: the
scan every gateway did before, ``gateway.rest.read_candles``). Once the index has caught up,
each gateway answers ``--requests`` requests for one symbol's last day (``start = end - 1 day``,
``end`` now: a range that reaches the present, so the index asks the broker for the topic's
end first, as for a live chart) one after the other; the figure is the median latency seen by
the client. Both answers are checked to be the same candles.

Metrics: ``ohlcv_index_<N>d_ms`` and ``ohlcv_scan_<N>d_ms`` per history length, the index's
build rate over the longest history (``ohlcv_index_build_records_per_s``: records over the time
from the gateway's start to the index catching up) and its size on disk per symbol and day of
1m candles (``ohlcv_index_kib_per_symbol_day``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

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

DAY_MS = 86_400_000
MIN_MS = 60_000
#: Revisions of a window as (offset from the window's start of its Kafka timestamp, final).
REVISIONS = ((20_000, False), (40_000, False), (MIN_MS + 2_000, True))


def candle_records(
    symbols: list[str], first_window: int, windows: int
) -> list[tuple[int, bytes, bytes]]:
    """``(timestamp, key, value)`` of every revision, in timestamp order (the worker's)."""
    from schemas.codec import encode
    from schemas.records import Interval, OHLCVUpdate

    out: list[tuple[int, bytes, bytes]] = []
    for n, symbol in enumerate(symbols):
        key = symbol.encode()
        for k in range(windows):
            start = first_window + k * MIN_MS
            price = 100.0 + n + (k % 50) * 0.1
            revisions = REVISIONS if k < windows - 1 else REVISIONS[:1]  # the last one is open
            for rev, (after, final) in enumerate(revisions):
                candle = OHLCVUpdate(
                    symbol=symbol,
                    interval=Interval.M1,
                    window_start_ms=start,
                    window_end_ms=start + MIN_MS,
                    open=price,
                    high=price + 1 + rev,
                    low=price - 1,
                    close=price + rev * 0.5,
                    volume=10.0 + rev,
                    trade_count=5 + rev,
                    rev=rev,
                    is_final=final,
                    event_time_ms=start + min(after, MIN_MS - 1),
                )
                out.append((start + after, key, encode(candle)))
    out.sort(key=lambda r: r[0])
    return out


async def fill(bootstrap: str, topic: str, records: list[tuple[int, bytes, bytes]]) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=20, acks=1, max_batch_size=256 * 1024
    )
    await producer.start()
    try:
        for timestamp, key, value in records:
            await producer.send(topic, value, key=key, timestamp_ms=timestamp)
        await producer.flush()
    finally:
        await producer.stop()


def wait_index(base: str, timeout: float = 600.0) -> dict[str, Any]:
    """The index's health once it has caught up with the topic."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        health = httpx.get(f"{base}/health", timeout=5.0).json()["candle_index"]
        if health["state"] == "failed":
            raise RuntimeError(f"the candle index failed: {health}")
        if health["state"] == "live" and health["behind"] == 0:
            return dict(health)
        time.sleep(0.2)
    raise TimeoutError(f"the candle index of {base} did not catch up within {timeout:.0f} s")


def time_requests(base: str, path: str, count: int) -> tuple[float, dict[str, Any]]:
    """Median latency (ms) of ``count`` sequential GETs of ``path`` (after one warm-up), and
    the last answer."""
    with httpx.Client(base_url=base, timeout=120.0) as client:
        body: dict[str, Any] = client.get(path).raise_for_status().json()
        seconds = []
        for _ in range(count):
            t0 = time.perf_counter()
            r = client.get(path)
            seconds.append(time.perf_counter() - t0)
            r.raise_for_status()
        body = r.json()
    return statistics.median(seconds) * 1000, body


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=10)
    parser.add_argument("--days", default="1,7", help="comma-separated history lengths")
    parser.add_argument("--requests", type=int, default=20)
    args = parser.parse_args()
    # The longest history is 7 days, the derived topics' retention: keep the broker's
    # retention check away from the bench's oldest records.
    os.environ["FIML_DERIVED_RETENTION_MS"] = str(30 * DAY_MS)
    symbols = [f"C{chr(65 + i // 26)}{chr(65 + i % 26)}" for i in range(args.symbols)]
    lengths = sorted(int(d) for d in args.days.split(","))
    metrics: dict[str, float] = {}
    extra: dict[str, Any] = {}
    with kafka() as bootstrap, tempfile.TemporaryDirectory(prefix="fiml-bench-ohlcv-") as tmp:
        from schemas.topics import topic_name

        for days in lengths:
            prefix = fresh_prefix(bootstrap)
            now = int(time.time() * 1000)
            last_window = now - now % MIN_MS
            windows = days * 1440
            records = candle_records(symbols, last_window - (windows - 1) * MIN_MS, windows)
            asyncio.run(fill(bootstrap, topic_name("fiml.ohlcv"), records))
            index_file = Path(tmp) / f"candles-{days}d.sqlite3"
            env = dict(os.environ, KAFKA_BOOTSTRAP_SERVERS=bootstrap, FIML_TOPIC_PREFIX=prefix)
            ports = free_port(), free_port()
            indexed = spawn(
                fiml("gateway", "--port", str(ports[0]), "--log-level", "warning"),
                dict(env, FIML_GATEWAY_CANDLE_INDEX=str(index_file)),
            )
            scanning = spawn(
                fiml("gateway", "--port", str(ports[1]), "--log-level", "warning"),
                dict(env, FIML_GATEWAY_CANDLE_INDEX="off"),
            )
            try:
                index_base, scan_base = (f"http://127.0.0.1:{p}" for p in ports)
                wait_http(f"{index_base}/health")
                wait_http(f"{scan_base}/health")
                health = wait_index(index_base)
                end = int(time.time() * 1000) + 1
                path = f"/ohlcv/{symbols[0]}?interval=1m&start={end - DAY_MS}&end={end}"
                index_ms, from_index = time_requests(index_base, path, args.requests)
                scan_ms, from_scan = time_requests(scan_base, path, args.requests)
            finally:
                stop(indexed, scanning)
            if from_index["candles"] != from_scan["candles"] or not from_index["candles"]:
                raise SystemExit(f"{days} d: the index and the scan answered differently")
            metrics[f"ohlcv_index_{days}d_ms"] = round(index_ms, 2)
            metrics[f"ohlcv_scan_{days}d_ms"] = round(scan_ms, 2)
            size = sum(f.stat().st_size for f in Path(tmp).glob(f"{index_file.name}*"))
            extra[f"{days}d"] = {
                "records": len(records),
                "candles_answered": len(from_index["candles"]),
                "index_bytes": size,
                "build_s": health["build_s"],
            }
            if days == lengths[-1]:
                metrics["ohlcv_index_build_records_per_s"] = round(len(records) / health["build_s"])
                metrics["ohlcv_index_kib_per_symbol_day"] = round(
                    size / 1024 / (len(symbols) * days), 1
                )
    report("ohlcv", metrics, symbols=len(symbols), runs=extra, note=MACHINE_NOTE)


if __name__ == "__main__":
    main()
