"""faust-streaming, aiokafka and the Kafka broker work together (tables and internal topics)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from tests.conftest import TopicFactory

pytestmark = pytest.mark.integration


async def test_faust_worker_updates_a_table_and_writes_output(
    kafka_bootstrap: str, make_topic: TopicFactory, tmp_path: Path
) -> None:
    source, output = await make_topic("smoke-in"), await make_topic("smoke-out")
    app_id = f"smoke-{uuid.uuid4().hex[:8]}"
    env = dict(
        os.environ,
        SMOKE_APP_ID=app_id,
        SMOKE_BOOTSTRAP=kafka_bootstrap,
        SMOKE_DATADIR=str(tmp_path / "faust"),
        SMOKE_IN=source,
        SMOKE_OUT=output,
    )
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "faust",
            "-A",
            "tests.integration.faust_smoke_app",
            "worker",
            "--loglevel",
            "warn",
            "--without-web",
        ],
        env=env,
        cwd=Path(__file__).resolve().parents[2],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
        await producer.start()
        try:
            for key in [b"a", b"b", b"a", b"a", b"b"]:
                await producer.send(source, b"x", key=key)
            await producer.flush()
        finally:
            await producer.stop()

        consumer = AIOKafkaConsumer(
            output, bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest"
        )
        await consumer.start()
        try:
            seen: list[bytes] = []
            deadline = time.monotonic() + 90
            while len(seen) < 5 and time.monotonic() < deadline:
                assert worker.poll() is None, worker.communicate()[0].decode(errors="replace")
                batch = await consumer.getmany(timeout_ms=1000)
                seen.extend(r.value for records in batch.values() for r in records)
        finally:
            await consumer.stop()
        assert sorted(seen) == sorted([b"a=1", b"b=1", b"a=2", b"a=3", b"b=2"])

        # The table is changelog-backed: Faust created its internal topic on the broker.
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        await admin.start()
        try:
            assert f"{app_id}-counts-changelog" in await admin.list_topics()
        finally:
            await admin.close()
    finally:
        worker.terminate()
        try:
            out, _ = worker.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            worker.kill()
            out, _ = worker.communicate()
    assert b"Traceback" not in out, out.decode(errors="replace")[-3000:]


async def test_a_fetch_returns_no_records_of_partitions_faust_has_paused(
    kafka_bootstrap: str, make_topic: TopicFactory
) -> None:
    """aiokafka's ``fetched_records`` reads an empty partition set as "every partition", and
    Faust hands it its live set of active partitions, which a rebalance empties while the fetch
    waits. ``OnlyThese`` (agents/arbitration/batches.py) makes an empty set mean none."""
    from aiokafka import TopicPartition

    from agents.arbitration.worker.faust_adapter import OnlyThese

    topic = await make_topic("fetch", partitions=2)
    tps = [TopicPartition(topic, 0), TopicPartition(topic, 1)]
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for tp in tps:
            await producer.send_and_wait(topic, b"r", partition=tp.partition)
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        fetcher = consumer._fetcher  # what Faust's consumer thread calls
        everything = await fetcher.fetched_records(set(), timeout=20)
        while len(everything) < 2:  # the hazard itself: an empty set took both partitions
            more = await fetcher.fetched_records(set(), timeout=20)
            assert more, "no records within 20 s"
            everything.update(more)
        assert set(everything) == set(tps)

        await consumer.seek_to_beginning(*tps)
        live: set[TopicPartition] = set()
        assert await fetcher.fetched_records(OnlyThese(live), timeout=2) == {}
        live.add(tps[0])
        first = await fetcher.fetched_records(OnlyThese(live), timeout=20)
        assert list(first) == [tps[0]]
        live.add(tps[1])
        second = await fetcher.fetched_records(OnlyThese(live), timeout=20)
        assert list(second) == [tps[1]]  # kept back while paused, not lost
    finally:
        await consumer.stop()
