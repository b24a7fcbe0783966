"""Ingestion against a real broker: exact counts, keys, order, and provider isolation."""

from __future__ import annotations

import asyncio
import re
import signal
import time
from collections import defaultdict

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from agents.ingest.ccxt_adapter import CcxtProvider
from agents.ingest.polling import PollingConfig
from agents.ingest.producer import IngestProducer
from agents.ingest.resilience import Backoff
from agents.ingest.runner import IngestRunner, run_simulation
from agents.ingest.simconfig import SimConfig
from agents.ingest.simulator import SimulatorProvider
from infra.procs import fiml_argv
from infra.topics import create_topics, describe_topics
from schemas.codec import decode, decode_raw
from schemas.records import ProviderHealth, RawTick, RawTrade
from schemas.topics import topic_name
from tests.conftest import free_port
from tests.integration.test_gateway import until

pytestmark = pytest.mark.integration


async def read_all(
    bootstrap: str, topic: str, expected: int, timeout: float = 60.0
) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record of ``topic`` from offset 0, until ``expected`` are read and the end
    offsets are reached (so extra records would be seen too)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        info = (await describe_topics(bootstrap, [topic]))[topic]
        partitions = [TopicPartition(topic, p) for p in range(info.partitions)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        end = await consumer.end_offsets(partitions)
        records: list[ConsumerRecord[bytes, bytes]] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            done = all([await consumer.position(tp) >= end[tp] for tp in partitions])
            if done and len(records) >= expected:
                break
            batch = await consumer.getmany(timeout_ms=500)
            for msgs in batch.values():
                records.extend(msgs)
        return records
    finally:
        await consumer.stop()


async def test_n_simulated_ticks_give_exactly_n_records(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    await create_topics(kafka_bootstrap)
    n = 3_000
    stats = await run_simulation(kafka_bootstrap, n, seed=11)
    assert (stats.dropped, stats.failed, stats.deadlettered) == (0, 0, 0)
    raw = await read_all(kafka_bootstrap, topic_name("fiml.raw"), n)
    records = [r for r in raw if isinstance(decode_raw(r.value), RawTick)]
    assert len(records) == n
    last_seq: dict[tuple[str, str], int] = {}
    partition_of: dict[str, int] = {}
    for record in records:  # partitions read in order: per-partition order is kept
        tick = decode(RawTick, record.value)
        assert record.key == tick.symbol.encode()
        assert partition_of.setdefault(tick.symbol, record.partition) == record.partition
        key = (tick.provider, tick.symbol)
        assert tick.seq > last_seq.get(key, -1)
        last_seq[key] = tick.seq
    assert {p for p, _ in last_seq} == {"sim-alpha", "sim-beta", "sim-gamma", "sim-delta"}
    # the same seed produces the same records: compare with the pure model
    trades = [r for r in raw if isinstance(decode_raw(r.value), RawTrade)]
    assert trades and all(decode(RawTrade, r.value).symbol.encode() == r.key for r in trades)
    truth = await read_all(kafka_bootstrap, topic_name("fiml.sim.truth"), 1)
    assert truth and all(decode(RawTick, r.value).provider == "truth" for r in truth)


async def test_offline_ccxt_reports_down_while_simulator_keeps_producing(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    await create_topics(kafka_bootstrap)
    fast = PollingConfig(interval=0.2, attempts=1, backoff=Backoff(base=0.05, cap=0.2))
    ccxt_provider = CcxtProvider("binance", ["BTC/USDT"], config=fast)
    sim = SimulatorProvider(SimConfig(seed=3), speed=20.0)
    async with IngestProducer(kafka_bootstrap) as producer:
        runner = IngestRunner(producer, [ccxt_provider, sim])
        runner.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if ccxt_provider.state.value == "down" and sim.ticks > 200:
                break
            await asyncio.sleep(0.1)
        ticks_when_down = sim.ticks
        await asyncio.sleep(0.5)  # the simulator keeps going after the adapter went down
        assert sim.ticks > ticks_when_down
        await runner.stop()
        await producer.flush()
    assert ccxt_provider.state.value == "stopped"
    health = await read_all(kafka_bootstrap, topic_name("fiml.provider.health"), 1)
    states = [decode(ProviderHealth, r.value) for r in health]
    down = [h for h in states if h.provider == "ccxt_binance" and h.state == "down"]
    assert down, states
    reason = down[0].reason or ""
    assert "unreachable" in reason and "BTC/USDT" in reason
    ticks = await read_all(kafka_bootstrap, topic_name("fiml.raw"), 200)
    assert len(ticks) >= 200
    assert {decode_raw(r.value).provider for r in ticks} <= {
        "sim-alpha", "sim-beta", "sim-gamma", "sim-delta",
    }  # fmt: skip
    counts: dict[str, int] = defaultdict(int)
    for h in states:
        counts[h.provider] += 1
    assert counts["sim-alpha"] >= 1


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
async def test_a_stopped_ingest_drains_its_buffer_and_prints_its_counts(
    kafka_bootstrap: str, topic_prefix: str, sig: signal.Signals
) -> None:
    """SIGTERM used to end ``fiml ingest`` at once, losing what was buffered; now every record
    the providers made is on the topics when it exits, and it says how many."""
    await create_topics(kafka_bootstrap)
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        *fiml_argv(
            "ingest",
            "-p",
            "sim",
            "--symbols",
            "BTC/USDT,ETH/USDT",
            "--rate",
            "20",
            "--bootstrap",
            kafka_bootstrap,
            "--quiet",
            "--metrics-port",
            str(port),
        ),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        ticks = topic_name("fiml.raw")

        async def some_sent() -> bool:
            return len(await read_all(kafka_bootstrap, ticks, 1, timeout=2)) > 200

        await until(some_sent, "ingest to send 200 ticks", deadline=60)
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        sent_line = next(
            line
            for line in metrics.splitlines()
            if line.startswith('fiml_ingest_records_total{outcome="sent"}')
        )
        assert float(sent_line.split()[-1]) > 0
        proc.send_signal(sig)
        _out, err = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, err.decode()
    summary = err.decode().strip().splitlines()[-1]
    assert summary.startswith("stopped: "), err.decode()
    counts = re.search(r"records sent ([\d,]+), dead-lettered ([\d,]+)", summary)
    assert counts is not None, summary
    sent, dead = (int(n.replace(",", "")) for n in counts.groups())
    assert "dropped 0, failed 0" in summary, summary
    on_topics = sum(
        [
            len(await read_all(kafka_bootstrap, topic_name(t), 0, timeout=5))
            for t in ("fiml.raw", "fiml.sim.truth", "fiml.provider.health", "fiml.deadletter")
        ]
    )
    assert on_topics == sent + dead  # every record it counted is there, and nothing else
