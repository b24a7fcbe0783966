"""A broker stopped and restarted mid-run: nothing lost, nothing duplicated.

This test starts its own broker (on free ports, in a temporary directory) so that stopping it
does not disturb the session broker the other tests use.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from agents.ingest.producer import IngestProducer
from agents.ingest.runner import IngestRunner
from agents.ingest.simconfig import SimConfig
from agents.ingest.simulator import SimulatorProvider
from infra.broker import BrokerConfig, LocalBroker
from infra.topics import create_topics
from schemas.codec import decode
from schemas.records import RawTick
from schemas.topics import topic_name
from tests.conftest import free_port
from tests.integration.test_ingest import read_all

pytestmark = pytest.mark.integration


async def _until(condition: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def test_broker_restart_loses_nothing_and_duplicates_nothing(
    tmp_path: Path, topic_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # LocalBroker defers to KAFKA_BOOTSTRAP_SERVERS when it is set; this test needs its own.
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    config = BrokerConfig(
        port=free_port(), controller_port=free_port(), data_dir=tmp_path / "kafka", heap="512m"
    )
    broker = LocalBroker(config)
    await asyncio.to_thread(broker.start)
    try:
        await create_topics(config.bootstrap)
        n = 4_000
        # 2 s of event time per wall second: the run lasts long enough to straddle the outage.
        sim = SimulatorProvider(SimConfig(seed=21), speed=40.0, max_ticks=n)
        producer = IngestProducer(config.bootstrap, request_timeout_ms=10_000, buffer_size=50_000)
        await producer.start()
        runner = IngestRunner(producer, [sim])
        runner.start()
        try:
            await _until(lambda: producer.stats.sent > 300, 60, "records before the outage")
            await asyncio.to_thread(broker.stop)
            sent_at_stop = producer.stats.sent
            ticks_at_stop = sim.ticks
            await _until(lambda: sim.ticks > ticks_at_stop + 300, 60, "ticks during the outage")
            await asyncio.sleep(1.0)  # let the outage last a little beyond the first failures
            await asyncio.to_thread(broker.start)
            await asyncio.wait_for(runner.wait(), 120)
            await asyncio.wait_for(producer.flush(), 120)
        finally:
            await runner.stop()
            await producer.stop()
        assert sent_at_stop < producer.stats.sent
        assert (producer.stats.failed, producer.stats.dropped) == (0, 0)
        records = await read_all(config.bootstrap, topic_name("fiml.raw.ticks"), n)
        ticks = [decode(RawTick, r.value) for r in records]
        ids = [(t.provider, t.seq) for t in ticks]
        assert len(ids) == len(set(ids)), "duplicates"
        assert len(ticks) == n, "lost or extra records"
    finally:
        await asyncio.to_thread(broker.stop)
