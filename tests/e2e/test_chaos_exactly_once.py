"""Chaos (a): the derived topics are a function of the raw log, whatever happens to the workers.

The same raw records (ticks and trades of four symbols from four providers, one of them going
dark, bad prints, poison, an event time a year old) are fed live, each run to a raw topic of its
own, to:

* a worker fed all at once;
* a worker fed in small slices with pauses (another pace, other batches);
* a worker SIGKILLed five times while it works, restarted each time;
* two workers sharing the partitions, one of them stopped (SIGSTOP) past its session timeout
  while the other takes its partitions over, then continued (SIGCONT): a zombie, fenced;
* ``fiml rebuild`` of the first run's raw topic.

Every derived topic of each run, read with ``read_committed``, must equal the first run's
record for record, key, value and headers: 0 missing, 0 duplicated, 0 different. Order is
compared per partition, and on the single-partition topics per source (a health record's key,
a dead letter's source partition): how two source partitions interleave there depends on
timing, the order within one does not.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import signal
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from agents.arbitration.core.processor import RAW
from agents.arbitration.rebuild import DERIVED, end_offsets, rebuild, wait_caught_up
from agents.arbitration.synthetic import synthetic_ticks, trade_of
from infra.topics import create_topics
from schemas.codec import encode
from schemas.records import RawTick, RawTrade
from schemas.topics import TOPICS
from tests.integration.arbitration_support import (
    WorkerProcess,
    assigned,
    read_all,
    tick_values,
)
from tests.integration.test_arbitration_worker import PROVIDERS, START, SYMBOLS
from tests.integration.test_gateway import until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

SESSION_S = 6  # the broker's smallest session timeout: a killed worker's partitions move sooner


def raw_log() -> list[tuple[bytes, bytes]]:
    """(key, value) of the raw records in the order ingestion would write them."""
    ticks, _ = synthetic_ticks(SYMBOLS, PROVIDERS, START, 240_000)
    records: list[RawTick | RawTrade] = []
    for t in ticks:
        records.append(t)
        if t.provider == "alpha":  # alpha's prints are trades too: volume, fiml.trades
            records.append(trade_of(t, str(t.seq), 0.5 + t.seq % 7, side="buy"))
    log = tick_values(records)
    year_old = ticks[10].model_copy(update={"event_time_ms": START - 365 * 86_400_000})
    log.insert(300, (b"ETH/USD", b"{not json"))
    log.insert(900, (b"SOL/USD", b'{"v":2,"symbol":"SOL/USD"}'))
    log.insert(1500, (year_old.symbol.encode(), encode(year_old)))
    return log


LOG = raw_log()


async def feed(bootstrap: str, prefix: str, slice_size: int, pause_s: float) -> None:
    """Produce the log to ``prefix``'s raw topic, ``slice_size`` records at a time."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5
    )
    await producer.start()
    try:
        topic = prefix + TOPICS[RAW].name
        for i in range(0, len(LOG), slice_size):
            futures = [await producer.send(topic, v, key=k) for k, v in LOG[i : i + slice_size]]
            await asyncio.gather(*futures)
            await asyncio.sleep(pause_s)
    finally:
        await producer.stop()


class Run:
    """One run's topics (a prefix of its own) and its worker processes (one app id)."""

    def __init__(self, name: str, bootstrap: str, tmp: Path) -> None:
        self.name, self.bootstrap, self.tmp = name, bootstrap, tmp
        self.prefix = f"x{uuid.uuid4().hex[:6]}{name}."
        self.app_id = f"{self.prefix}arb"
        self.workers: list[WorkerProcess] = []

    def worker(self) -> WorkerProcess:
        i = len(self.workers)
        w = WorkerProcess(
            self.bootstrap,
            self.app_id,
            self.tmp / f"{self.name}{i}",
            self.tmp / f"{self.name}{i}.log",
            FIML_TOPIC_PREFIX=self.prefix,
        )
        w.env["FIML_ARB_SESSION_TIMEOUT_S"] = str(SESSION_S)
        self.workers.append(w)
        return w

    async def create(self) -> None:
        os.environ["FIML_TOPIC_PREFIX"] = self.prefix
        await create_topics(self.bootstrap)

    async def caught_up(self, alive: Callable[[], bool], timeout_s: float = 240) -> None:
        ends = await end_offsets(self.bootstrap, self.prefix, (RAW,))
        assert sum(ends.values()) == len(LOG)
        await wait_caught_up(self.bootstrap, self.app_id, ends, timeout_s, alive)

    def stop(self) -> list[str]:
        return [w.stop() for w in self.workers]


async def derived(bootstrap: str, prefix: str) -> dict[str, dict[Any, list[Any]]]:
    """Every derived topic's committed records, grouped so that their order is determined:
    per partition, and per source on the single-partition topics."""
    out: dict[str, dict[Any, list[Any]]] = {}
    for logical in DERIVED:
        groups: dict[Any, list[Any]] = {}
        for key, value, headers, partition in await read_all(
            bootstrap, logical, raw=True, prefix=prefix
        ):
            if logical == "fiml.provider.health":
                group: Any = key
            elif logical == "fiml.deadletter":
                group = headers.get("fiml-partition")
            else:
                group = partition
            groups.setdefault(group, []).append((key, value, sorted(headers.items())))
        out[logical] = groups
    return out


def differences(
    want: dict[str, dict[Any, list[Any]]], got: dict[str, dict[Any, list[Any]]]
) -> dict[str, tuple[int, int, int]]:
    """Per topic with a difference: (missing, extra, different) records."""
    found: dict[str, tuple[int, int, int]] = {}
    for topic in want:
        missing = extra = different = 0
        for group in want[topic].keys() | got[topic].keys():
            a, b = want[topic].get(group, []), got[topic].get(group, [])
            missing += max(0, len(a) - len(b))
            extra += max(0, len(b) - len(a))
            different += sum(x != y for x, y in zip(a, b, strict=False))
        if missing or extra or different:
            found[topic] = (missing, extra, different)
    return found


def assigned_count(w: WorkerProcess) -> int:
    return len(assigned(w.output()))


def last_assignment(w: WorkerProcess) -> set[int]:
    return (assigned(w.output()) or [set()])[-1]


async def test_every_derived_topic_is_a_function_of_the_raw_log(
    kafka_bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FIML_TOPIC_PREFIX", "")
    rng = random.Random(14)
    runs = {
        name: Run(name, kafka_bootstrap, tmp_path) for name in ("fast", "slow", "killed", "stalled")
    }
    for run in runs.values():
        await run.create()
    try:
        # two paces side by side
        fast, slow = runs["fast"].worker(), runs["slow"].worker()
        fast.start()
        slow.start()
        await asyncio.gather(
            feed(kafka_bootstrap, runs["fast"].prefix, len(LOG), 0),
            feed(kafka_bootstrap, runs["slow"].prefix, 37, 0.05),
        )
        await runs["fast"].caught_up(fast.alive)
        await runs["slow"].caught_up(slow.alive)
        fast.stop()
        slow.stop()

        # five SIGKILLs while the records arrive and the worker works
        killed = runs["killed"]
        feeding = asyncio.create_task(feed(kafka_bootstrap, killed.prefix, 60, 0.4))
        for _ in range(5):
            w = killed.worker()
            w.start()

            def assigned_now(w: WorkerProcess = w) -> bool:
                return assigned_count(w) >= 1

            await until(assigned_now, "an assignment", deadline=90)
            await asyncio.sleep(rng.uniform(0.3, 2.5))
            w.kill()
        await feeding
        last = killed.worker()
        last.start()
        await killed.caught_up(last.alive)
        last.stop()

        # a stalled worker: its partitions move to the other, then it continues (a zombie)
        stalled = runs["stalled"]
        one, two = stalled.worker(), stalled.worker()
        one.start()
        feeding = asyncio.create_task(feed(kafka_bootstrap, stalled.prefix, 60, 0.3))
        await until(lambda: assigned_count(one) >= 1, "the first worker's assignment", deadline=90)
        two.start()
        await until(
            lambda: (
                last_assignment(one)
                and last_assignment(two)
                and last_assignment(one) | last_assignment(two) == {0, 1, 2, 3}
            ),
            "the partitions shared by two workers",
            deadline=90,
        )
        assert one.proc is not None
        os.killpg(one.proc.pid, signal.SIGSTOP)
        await until(
            lambda: last_assignment(two) == {0, 1, 2, 3},
            "the running worker taking every partition",
            deadline=90,
        )
        await asyncio.sleep(1.0)
        os.killpg(one.proc.pid, signal.SIGCONT)
        await feeding
        await stalled.caught_up(two.alive)
        await asyncio.sleep(2 * SESSION_S)  # whatever the zombie does, give it time to do it
        await stalled.caught_up(two.alive)
        logs = [w.stop() for r in runs.values() for w in r.workers]
        # no worker crashed: not the one whose partitions a woken zombie took back (its
        # producer is fenced: it lets them go until the next assignment), nor the zombie
        for log in logs:
            assert "Traceback" not in log, log[-3000:]
        assert all(
            w.proc is None or w.proc.poll() is not None for r in runs.values() for w in r.workers
        )

        target = f"x{uuid.uuid4().hex[:6]}rebuilt."
        report = await rebuild(
            kafka_bootstrap,
            runs["fast"].prefix,
            target,
            timeout_s=240,
            log_path=tmp_path / "rebuild.log",
        )
        assert report.raw[runs["fast"].prefix + TOPICS[RAW].name] == len(LOG)

        want = await derived(kafka_bootstrap, runs["fast"].prefix)
        counts = {t: sum(map(len, g.values())) for t, g in want.items()}
        assert all(counts[t] > 0 for t in DERIVED), counts  # every topic is exercised
        assert counts["fiml.deadletter"] == 3
        found = {
            name: differences(want, await derived(kafka_bootstrap, prefix))
            for name, prefix in (
                ("slow", runs["slow"].prefix),
                ("killed", killed.prefix),
                ("stalled", stalled.prefix),
                ("rebuilt", target),
            )
        }
        assert found == {name: {} for name in found}, (counts, found)
        # the killed workers' successors resumed from marks, not from the start
        resumed = [int(n) for log in logs for n in re.findall(r"resumed at offset (\d+)", log)]
        assert any(offset > 0 for offset in resumed), resumed
    finally:
        for run in runs.values():
            run.stop()
