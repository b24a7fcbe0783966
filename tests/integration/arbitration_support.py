"""Helpers of the arbitration integration tests: a worker process, produce, read, reference."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from agents.arbitration.core.processor import Processor
from agents.arbitration.settings import ArbitrationSettings
from schemas.codec import encode
from schemas.records import RawTick, RawTrade
from schemas.topics import TOPICS, topic_name

ROOT = Path(__file__).resolve().parents[2]

#: (partition, offset, raw value) of a produced raw record
Produced = tuple[int, int, bytes]


class WorkerProcess:
    """An arbitration worker (``faust -A agents.arbitration.app worker``) in its own process
    group, logging to a file (a pipe nobody reads would block it)."""

    def __init__(self, bootstrap: str, app_id: str, datadir: Path, log: Path, **env: str) -> None:
        self.env = dict(
            os.environ,
            KAFKA_BOOTSTRAP_SERVERS=bootstrap,
            FIML_ARB_APP_ID=app_id,
            FIML_ARB_DATADIR=str(datadir),
            FIML_ARB_SESSION_TIMEOUT_S="10",
            **env,
        )
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, loglevel: str = "info") -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "faust",
                    "-A",
                    "agents.arbitration.app",
                    "worker",
                    "-l",
                    loglevel,
                    "--without-web",
                ],
                env=self.env,
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL the whole process group and reap it."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self) -> str:
        """Terminate (SIGTERM, then SIGKILL after 60 s); the log so far. The log's end is
        printed too: pytest shows it with a failed test (a CI run keeps nothing else)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.kill()
        out = self.output()
        print(f"--- the end of {self.log.name}:\n{out[-6000:]}")
        return out

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


async def produce(
    bootstrap: str,
    logical: str,
    values: Iterable[tuple[bytes, bytes]],
) -> list[Produced]:
    """Send (key, value) pairs in order; their (partition, offset, value)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        futs = [(await producer.send(topic_name(logical), v, key=k), v) for k, v in values]
        out = []
        for fut, v in futs:
            md = await fut
            out.append((md.partition, md.offset, v))
        return out
    finally:
        await producer.stop()


def tick_values(ticks: Iterable[RawTick | RawTrade]) -> list[tuple[bytes, bytes]]:
    """(key, value) pairs of raw records as ingestion writes them: keyed by symbol."""
    return [(t.symbol.encode(), encode(t)) for t in ticks]


async def read(
    bootstrap: str,
    logical: str,
    done: Callable[[list[Any]], bool],
    deadline_s: float = 120,
    alive: Callable[[], bool] = lambda: True,
    raw: bool = False,
    prefix: str | None = None,
) -> list[Any]:
    """Every record of ``logical`` from the start, read until ``done(records)`` or the
    deadline (or ``alive()`` turns false). Records are decoded JSON, or ``(key, value,
    headers, partition)`` when ``raw``."""
    name = topic_name(logical) if prefix is None else prefix + TOPICS[logical].name
    # read_committed, as every FIML reader: records of aborted transactions are not there
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, isolation_level="read_committed"
    )
    await consumer.start()
    out: list[Any] = []
    try:
        tps = [TopicPartition(name, p) for p in range(TOPICS[logical].partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        loop = asyncio.get_running_loop()
        end = loop.time() + deadline_s
        while not done(out) and loop.time() < end and alive():
            batch = await consumer.getmany(timeout_ms=500)
            for tp in sorted(batch, key=lambda t: t.partition):
                for r in batch[tp]:
                    out.append(
                        (r.key, r.value, dict(r.headers), r.partition)
                        if raw
                        else orjson.loads(r.value)
                    )
    finally:
        await consumer.stop()
    return out


def reference(
    records: Iterable[Produced], settings: ArbitrationSettings | None = None
) -> dict[str, list[bytes]]:
    """The records of ``fiml.raw`` through one pure processor in (partition, offset) order:
    what a worker must produce, per logical output topic (in each partition's order)."""
    proc = Processor(settings or ArbitrationSettings())
    out: dict[str, list[bytes]] = {}
    for partition, offset, value in sorted(records, key=lambda r: r[:2]):
        proc.process(None, value, partition, offset)
    for logical, _k, value, _p, _h in proc.drain():
        out.setdefault(logical, []).append(value)
    return out


async def read_all(
    bootstrap: str,
    logical: str,
    deadline_s: float = 60,
    prefix: str | None = None,
    raw: bool = False,
) -> list[Any]:
    """Every committed record of ``logical`` now on the broker: read with ``read_committed``
    up to each partition's last stable offset (the offsets of transaction markers hold no
    record, so counting records against end offsets would not do)."""
    name = topic_name(logical) if prefix is None else prefix + TOPICS[logical].name
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        isolation_level="read_committed",
        auto_offset_reset="earliest",
    )
    await consumer.start()
    out: list[Any] = []
    try:
        tps = [TopicPartition(name, p) for p in range(TOPICS[logical].partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)  # before end_offsets (transactions.read_mark)
        ends = await consumer.end_offsets(tps)

        async def drain() -> None:
            for tp in tps:
                while await consumer.position(tp) < ends[tp]:
                    for r in (await consumer.getmany(tp, timeout_ms=500)).get(tp, []):
                        out.append(
                            (r.key, r.value, dict(r.headers), r.partition)
                            if raw
                            else orjson.loads(r.value)
                        )

        await asyncio.wait_for(drain(), deadline_s)
    finally:
        await consumer.stop()
    return out


def assigned(log: str) -> list[set[int]]:
    """The raw partitions of each assignment a worker logged, in order."""
    marker = "raw partitions assigned: "
    return [
        {int(p) for p in line.split(marker)[1].split(", ") if p.strip().isdigit()}
        for line in log.splitlines()
        if marker in line
    ]
