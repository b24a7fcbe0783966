"""Throughput of the arbitration worker against its baselines, same data, same run.

    KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092 python -m bench.arbitration --ticks 30000

1. plain aiokafka: ``getmany`` -> decode RawTick -> encode -> ``send`` (linger 5 ms), in process;
   and the same loop forwarding the bytes untouched through ``send_batch`` (one output per
   input);
2. the I/O baseline: consume the same raw records and, per fetch, send through ``send_batch``
   the very records the worker writes for them (the same number and size, computed beforehand
   by the step alone): the Kafka I/O limit of this workload in one Python process (the best of
   three passes). The worker also does the arbitration and its transactions; this does
   neither;
3. a naive Faust agent (bench/naive_faust_app.py), ``await topic.send`` per record, a worker
   process;
4. the arbitration worker (``faust -A agents.arbitration.app worker``), a worker process,
   doing the whole job (consensus, quotes, candles, health, checkpoints) with the engine that
   ``FIML_ARB_ENGINE`` selects (the compiled core by default);
5. the arbitration step alone, no Kafka at all (best of three passes), with the Python
   reference and with the compiled core: the ceiling that the rest of the worker (fetch,
   bookkeeping, produce, state) is measured against.

Each reads the same raw ticks (4 partitions) from offset 0. A rate is records divided by the
time from the first output record to the last; worker start-up is not counted. It also prints
the amplification: output records (and bytes) per raw tick, per output topic. This is a script,
not a test: numbers depend on the machine (docs/ARBITRATION.md has ours).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from agents.arbitration.core.processor import Output
from bench.common import report, stop

ROOT = Path(__file__).resolve().parents[1]


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


async def produce_ticks(bootstrap: str, topic: str, n: int) -> None:
    from agents.arbitration.synthetic import ProviderModel, synthetic_ticks
    from schemas.codec import encode

    providers = [ProviderModel(f"p{i}", every_ms=100 + 37 * i) for i in range(4)]
    symbols = [f"SYM{i}/USD" for i in range(8)]
    per_ms = len(providers) * len(symbols) / 160  # ticks per ms of event time, roughly
    ticks, _ = synthetic_ticks(symbols, providers, 1_700_000_000_000, int(n / per_ms) + 1000)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, acks=1)
    await producer.start()
    try:
        for tick in ticks[:n]:
            await producer.send(topic, encode(tick), key=tick.symbol.encode())
        await producer.flush()
    finally:
        await producer.stop()


async def count(bootstrap: str, topic: str, partitions: int = 4) -> int:
    """Offsets committed in ``topic``: the sum of its last stable offsets (read_committed),
    so records of an open transaction do not count yet. Transaction markers take an offset
    each, a handful a second against thousands of records: close enough to time the n-th
    record. Every topic here has 4 partitions (the consumer's metadata does not list a topic
    it is not subscribed to)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, isolation_level="read_committed")
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        return sum((await consumer.end_offsets(tps)).values())
    finally:
        await consumer.stop()


async def watch(bootstrap: str, topic: str, n: int, deadline_s: float) -> float:
    """Seconds from the first output record to the n-th (polled every 0.2 s)."""
    first = None
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        c = await count(bootstrap, topic)
        now = time.monotonic()
        if c and first is None:
            first = now
        if c >= n and first is not None:
            return max(now - first, 1e-3)
        await asyncio.sleep(0.2)
    raise TimeoutError(f"{topic}: fewer than {n} records after {deadline_s} s")


async def plain_loop(bootstrap: str, src: str, dst: str, n: int) -> float:
    """``getmany`` -> decode RawTick -> encode -> ``send`` per record."""
    from schemas.codec import decode, encode
    from schemas.records import RawTick

    async def step(producer: AIOKafkaProducer, partition: int, records: list[Any]) -> list[Any]:
        return [
            await producer.send(
                dst, encode(decode(RawTick, r.value)), key=r.key, partition=partition
            )
            for r in records
        ]

    return await _consume_produce(bootstrap, src, n, step)


async def plain_forward(bootstrap: str, src: str, dst: str, n: int) -> float:
    """``getmany`` -> one ``send_batch`` per partition, bytes untouched."""

    async def step(producer: AIOKafkaProducer, partition: int, records: list[Any]) -> list[Any]:
        futs, builder = [], producer.create_batch()
        for r in records:
            if builder.append(key=r.key, value=r.value, timestamp=None) is None:
                builder.close()
                futs.append(await producer.send_batch(builder, dst, partition=partition))
                builder = producer.create_batch()
                builder.append(key=r.key, value=r.value, timestamp=None)
        builder.close()
        futs.append(await producer.send_batch(builder, dst, partition=partition))
        return futs

    return await _consume_produce(bootstrap, src, n, step)


async def io_baseline(
    bootstrap: str, src: str, dst: str, n: int, outputs: dict[tuple[int, int], list[Output]]
) -> float:
    """Seconds to consume ``n`` records of ``src`` and send, per fetched partition, one
    ``send_batch`` of the records the worker writes for them (``outputs``: (partition, offset)
    -> its outputs). Nothing waits between fetches (no per-fetch delivery wait, no commit, no
    transaction): the ceiling of this workload's Kafka I/O in one Python process."""
    consumer = AIOKafkaConsumer(
        src, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks="all")
    await consumer.start()
    await producer.start()
    try:
        done, t0, futs = 0, None, []
        while done < n:
            batch = await consumer.getmany(timeout_ms=1000, max_records=2000)
            t0 = t0 or time.monotonic()
            for tp, records in batch.items():
                builder = producer.create_batch()
                for r in records:
                    for _topic, key, value, _p, _headers in outputs.get(
                        (tp.partition, r.offset), ()
                    ):
                        if builder.append(key=key, value=value, timestamp=None) is None:
                            builder.close()
                            futs.append(
                                await producer.send_batch(builder, dst, partition=tp.partition)
                            )
                            builder = producer.create_batch()
                            builder.append(key=key, value=value, timestamp=None)
                builder.close()
                futs.append(await producer.send_batch(builder, dst, partition=tp.partition))
                done += len(records)
        await asyncio.gather(*futs)
        return time.monotonic() - (t0 or time.monotonic())
    finally:
        await consumer.stop()
        await producer.stop()


async def _consume_produce(
    bootstrap: str,
    src: str,
    n: int,
    step: Callable[[AIOKafkaProducer, int, list[Any]], Awaitable[list[Any]]],
) -> float:
    """Seconds to take ``n`` records of ``src`` through ``step`` (per fetched partition),
    delivery awaited and offsets committed per fetch."""
    consumer = AIOKafkaConsumer(
        src,
        bootstrap_servers=bootstrap,
        group_id=uuid.uuid4().hex,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks="all")
    await consumer.start()
    await producer.start()
    try:
        done, t0 = 0, None
        while done < n:
            batch = await consumer.getmany(timeout_ms=1000, max_records=2000)
            t0 = t0 or time.monotonic()
            futs = []
            for tp, records in batch.items():
                futs.extend(await step(producer, tp.partition, records))
                done += len(records)
            await asyncio.gather(*futs)
            await consumer.commit()
        return time.monotonic() - (t0 or time.monotonic())
    finally:
        await consumer.stop()
        await producer.stop()


async def fetch_all(bootstrap: str, src: str, n: int) -> list[tuple[bytes | None, bytes, int, int]]:
    """The first ``n`` records of ``src`` as (key, value, partition, offset), in fetch order."""
    consumer = AIOKafkaConsumer(
        src, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    try:
        records: list[tuple[bytes | None, bytes, int, int]] = []
        while len(records) < n:
            batch = await consumer.getmany(timeout_ms=1000, max_records=2000)
            for tp, rs in batch.items():
                records.extend((r.key, r.value, tp.partition, r.offset) for r in rs)
        return records[:n]
    finally:
        await consumer.stop()


Fetched = list[tuple[bytes | None, bytes, int, int]]


def compute_alone(records: Fetched, engine: str, passes: int = 3) -> float:
    """Seconds for a fresh engine (``python`` or ``compiled``) to take ``records`` a fetch at a
    time (2,000 records, as the worker does, outputs drained per fetch), its state saved at the
    end; the best of ``passes``."""
    from agents.arbitration.engine import make_processor
    from agents.arbitration.settings import ArbitrationSettings

    fetches = _fetches(records)
    best = float("inf")
    for _ in range(passes):
        processor = make_processor(ArbitrationSettings(engine=engine))
        started = time.perf_counter()
        for partition, batch in fetches:
            processor.process_many(partition, batch)
            processor.drain_partitions()
        for partition in {r[2] for r in records}:  # the state, saved once (once a second here)
            processor.mark(partition)
        best = min(best, time.perf_counter() - started)
    return best


def _fetches(
    records: Fetched, size: int = 2000
) -> list[tuple[int, list[tuple[bytes | None, bytes, int]]]]:
    """``records`` cut as the worker's fetches are: up to ``size`` records, per partition."""
    out: list[tuple[int, list[tuple[bytes | None, bytes, int]]]] = []
    for start in range(0, len(records), size):
        by_partition: dict[int, list[tuple[bytes | None, bytes, int]]] = {}
        for key, value, partition, offset in records[start : start + size]:
            by_partition.setdefault(partition, []).append((key, value, offset))
        out.extend(sorted(by_partition.items()))
    return out


def outputs_of(records: Fetched) -> dict[tuple[int, int], list[Output]]:
    """What the worker writes for each raw record: (partition, offset) -> its outputs."""
    from agents.arbitration.engine import make_processor
    from agents.arbitration.settings import ArbitrationSettings

    processor = make_processor(ArbitrationSettings(engine="compiled"))
    out: dict[tuple[int, int], list[Output]] = {}
    for key, value, partition, offset in records:
        processor.process(key, value, partition, offset)
        out[(partition, offset)] = processor.drain()
    return out


def amplification(outputs: dict[tuple[int, int], list[Output]], ticks: int) -> dict[str, float]:
    """Output records and bytes per raw tick, per output topic and in all."""
    records: dict[str, int] = {}
    size: dict[str, int] = {}
    for outs in outputs.values():
        for topic, key, value, _p, _h in outs:
            records[topic] = records.get(topic, 0) + 1
            size[topic] = size.get(topic, 0) + len(value) + len(key or b"")
    per_tick = {f"{t}_records_per_tick": round(c / ticks, 3) for t, c in sorted(records.items())}
    per_tick["records_per_tick"] = round(sum(records.values()) / ticks, 3)
    per_tick["bytes_per_tick"] = round(sum(size.values()) / ticks, 1)
    return per_tick


def start_worker(module: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "faust",
            "-A",
            module,
            "--loop",
            "uvloop",
            "worker",
            "-l",
            "warn",
            "--without-web",
        ],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # its own process group: stopped whole, no orphan left


async def run_worker(module: str, env: dict[str, str], out: str, n: int, bootstrap: str) -> float:
    proc = start_worker(module, env)
    try:
        return await watch(bootstrap, out, n, deadline_s=600)
    finally:
        stop(proc)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ticks", type=int, default=60_000)
    parser.add_argument("--skip-naive", action="store_true")
    args = parser.parse_args()
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    prefix = f"bench{uuid.uuid4().hex[:6]}."
    os.environ["FIML_TOPIC_PREFIX"] = prefix
    from infra.topics import create_topics, ensure_topic
    from schemas.topics import topic_name

    await create_topics(bootstrap)
    src = topic_name("fiml.raw")
    plain_out, naive_out = prefix + "bench.plain", prefix + "bench.naive"
    forward_out, io_out = prefix + "bench.forward", prefix + "bench.io"
    for name in (plain_out, naive_out, forward_out):
        await ensure_topic(bootstrap, name, 4, {})
    await produce_ticks(bootstrap, src, args.ticks)
    n = args.ticks
    say(f"produced {n} raw ticks to {src}")
    fetched = await fetch_all(bootstrap, src, n)
    outputs = outputs_of(fetched)
    amplified = amplification(outputs, n)
    say(f"amplification: {amplified}")
    results: dict[str, float] = {}

    async def measure(name: str, seconds: Awaitable[float]) -> None:
        results[name] = n / await seconds
        say(f"{name}: {results[name]:.0f}/s")

    await measure("plain aiokafka loop", plain_loop(bootstrap, src, plain_out, n))
    await measure("plain forward (bytes)", plain_forward(bootstrap, src, forward_out, n))
    # the best of three: the first pass on a fresh broker runs up to 1.6x slower (its JIT
    # warming up on this produce path), and a ceiling should be the best it can do
    io_rates = []
    for run in range(3):
        await ensure_topic(bootstrap, f"{io_out}{run}", 4, {})
        io_rates.append(n / await io_baseline(bootstrap, src, f"{io_out}{run}", n, outputs))
    results["I/O baseline"] = max(io_rates)
    say(f"I/O baseline: {', '.join(f'{r:.0f}' for r in io_rates)}/s (the best counts)")
    with tempfile.TemporaryDirectory() as tmp:
        base = dict(os.environ, KAFKA_BOOTSTRAP_SERVERS=bootstrap, FIML_TOPIC_PREFIX=prefix)
        if not args.skip_naive:
            env = dict(
                base,
                BENCH_APP_ID=f"naive-{uuid.uuid4().hex[:6]}",
                BENCH_DATADIR=f"{tmp}/naive",
                BENCH_IN=src,
                BENCH_OUT=naive_out,
            )
            await measure(
                "naive Faust agent",
                run_worker("bench.naive_faust_app", env, naive_out, n, bootstrap),
            )
        env = dict(
            base, FIML_ARB_APP_ID=f"arb-{uuid.uuid4().hex[:6]}", FIML_ARB_DATADIR=f"{tmp}/arb"
        )
        await measure(
            "arbitration worker",
            run_worker("agents.arbitration.app", env, topic_name("fiml.prices"), n, bootstrap),
        )
    for engine in ("python", "compiled"):
        results[f"step alone ({engine})"] = n / compute_alone(fetched, engine)
        say(f"step alone ({engine}, no Kafka): {results[f'step alone ({engine})']:.0f}/s")
    print(f"{n} raw ticks, 4 partitions, broker {bootstrap}")
    for name, rate in results.items():
        print(f"{name:24s} {rate:10.0f} ticks/s")
    arb, io = results["arbitration worker"], results["I/O baseline"]
    python_step, compiled_step = results["step alone (python)"], results["step alone (compiled)"]
    print(f"arbitration / I/O baseline = {arb / io:.2f}")
    print(f"arbitration / plain forward = {arb / results['plain forward (bytes)']:.2f}")
    print(f"compiled step / Python step = {compiled_step / python_step:.1f}")
    print(f"arbitration / compiled step alone = {arb / compiled_step:.2f}")
    metrics: dict[str, float] = {
        "arbitration_ticks_per_s": round(arb),
        "arbitration_io_baseline_ticks_per_s": round(io),
        "plain_aiokafka_ticks_per_s": round(results["plain aiokafka loop"]),
        "plain_forward_ticks_per_s": round(results["plain forward (bytes)"]),
        "arbitration_step_alone_ticks_per_s": round(compiled_step),
        "arbitration_step_python_ticks_per_s": round(python_step),
        **{f"arbitration_{k}": v for k, v in amplified.items()},
    }
    if "naive Faust agent" in results:
        naive = results["naive Faust agent"]
        print(f"arbitration / naive = {arb / naive:.1f}")
        metrics["naive_faust_ticks_per_s"] = round(naive)
    report("arbitration", metrics)  # the last line of stdout, for bench/run.py


if __name__ == "__main__":
    asyncio.run(main())
