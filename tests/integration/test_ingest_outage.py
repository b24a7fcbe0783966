"""A broker stopped and restarted mid-run: nothing lost, nothing duplicated.

This test starts its own broker (on free ports, in a temporary directory) so that stopping it
does not disturb the session broker the other tests use.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from pathlib import Path

import pytest

from agents.ingest.producer import IngestProducer
from agents.ingest.runner import IngestRunner
from agents.ingest.simconfig import SimConfig
from agents.ingest.simulator import TRUTH_PROVIDER, SimulatorProvider
from infra.broker import BrokerConfig, LocalBroker
from infra.topics import create_topics
from schemas.codec import decode, decode_raw
from schemas.records import RawTick, RawTrade
from schemas.topics import topic_name
from tests.conftest import free_port
from tests.integration.test_ingest import read_all

pytestmark = pytest.mark.integration

OUTAGE_S = 15.0  # the broker stays down at least this long


async def _until(condition: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def _check_sequences(*topics: list[RawTick] | list[RawTrade]) -> dict[str, int]:
    """Per provider: seqs 0..k-1 each exactly once across ``topics`` (nothing lost, nothing
    duplicated); within a topic, per (provider, symbol) strictly increasing in partition order
    (nothing reordered). Returns the record count per provider."""
    seen: dict[str, list[int]] = defaultdict(list)
    for records in topics:
        last: dict[tuple[str, str], int] = {}
        for record in records:
            key = (record.provider, record.symbol)
            assert record.seq > last.get(key, -1), f"reordered or duplicated: {key} {record.seq}"
            last[key] = record.seq
            seen[record.provider].append(record.seq)
    for provider, seqs in seen.items():
        assert sorted(seqs) == list(range(len(seqs))), f"{provider}: gaps or duplicates"
    return {provider: len(seqs) for provider, seqs in seen.items()}


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
        # About 110 ticks a wall second: the run (~35 s) outlasts a slow broker stop on a
        # loaded machine plus the outage, so ticks keep coming while the broker is down.
        sim = SimulatorProvider(SimConfig(seed=21), speed=4.0, max_ticks=n)
        # The default request_timeout_ms (5 min) outlasts the outage: aiokafka rides it out.
        producer = IngestProducer(config.bootstrap, buffer_size=50_000)
        await producer.start()
        runner = IngestRunner(producer, [sim])
        runner.start()
        try:
            await _until(lambda: producer.stats.sent > 300, 60, "records before the outage")
            await asyncio.to_thread(broker.stop)
            stopped_at = time.monotonic()
            sent_at_stop = producer.stats.sent
            ticks_at_stop = sim.ticks
            await _until(lambda: sim.ticks > ticks_at_stop + 300, 60, "ticks during the outage")
            # Longer than the 10 s request timeout that used to expire batches and wedge the
            # producer on a sequence gap.
            await asyncio.sleep(max(0.0, OUTAGE_S - (time.monotonic() - stopped_at)))
            assert producer.stats.sent - sent_at_stop < 1_000  # at most one batch in flight
            await asyncio.to_thread(broker.start)
            await asyncio.wait_for(runner.wait(), 120)
            await asyncio.wait_for(producer.flush(), 120)
        finally:
            await runner.stop()
            await producer.stop()
        stats = producer.stats
        assert sent_at_stop < stats.sent
        assert (stats.failed, stats.dropped, stats.deadlettered, stats.reconnects) == (0, 0, 0, 0)
        raw = [
            decode_raw(r.value) for r in await read_all(config.bootstrap, topic_name("fiml.raw"), n)
        ]
        truth_topic = await read_all(config.bootstrap, topic_name("fiml.sim.truth"), 1)
        health_topic = await read_all(config.bootstrap, topic_name("fiml.provider.health"), 1)
        ticks = [r for r in raw if isinstance(r, RawTick)]
        trades = [r for r in raw if isinstance(r, RawTrade)]
        assert len(ticks) == n == sim.ticks, "lost or extra ticks"
        assert len(trades) == sim.trades, "lost or extra trades"
        per_provider = _check_sequences(ticks, trades)
        assert sum(per_provider.values()) == n + sim.trades
        truth = _check_sequences([decode(RawTick, r.value) for r in truth_topic])
        total = len(ticks) + len(trades) + len(truth_topic) + len(health_topic)
        assert total == stats.sent, "every record counted as sent is in the topics, once"
        assert truth[TRUTH_PROVIDER] == len(truth_topic)
    finally:
        await asyncio.to_thread(broker.stop)
