"""Ingestion's and arbitration's Prometheus metrics: what they count, served over HTTP by
prometheus-client. No broker: the processor and the runner over fakes."""

from __future__ import annotations

import httpx
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from agents.arbitration.core.processor import RAW, Processor
from agents.arbitration.metrics import WorkerCounters, readings
from agents.arbitration.settings import ArbitrationSettings
from agents.ingest.runner import LOSS_REPORTER, IngestRunner
from agents.ingest.simulator import SimulatorProvider
from agents.metrics import registry_for, serve
from schemas.codec import decode, encode
from schemas.records import AssetType, ProviderHealth, RawTick
from tests.conftest import free_port
from tests.unit.ingest.test_producer import FakeCluster, _stall, make, tick

NOW = 1_796_400_000_000


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_arbitration_counts_what_it_read_wrote_and_refused() -> None:
    proc = Processor(ArbitrationSettings())
    counters = WorkerCounters(records_in={RAW: 3})
    good = RawTick(
        provider="a",
        symbol="BTC/USDT",
        provider_symbol="BTCUSDT",
        asset_type=AssetType.CRYPTO,
        price=1.0,
        event_time_ms=NOW,
        ingest_time_ms=NOW,
        seq=1,
    )
    proc.process(None, encode(good), 0, 0)
    proc.process(None, b"{not json", 0, 1)
    old = good.model_copy(update={"event_time_ms": NOW - 86_400_000, "seq": 2})
    proc.process(None, encode(old), 0, 2)
    text = generate_latest(
        registry_for(lambda: readings(proc, counters, lambda: {0: 5}, lambda: {0: 1.5}))
    ).decode()
    got = samples(text)
    assert got[("fiml_arbitration_records_in_total", (("topic", RAW),))] == 3
    assert got[("fiml_arbitration_dead_letters_total", ())] == 2
    assert got[("fiml_arbitration_out_of_time_total", ())] == 1
    assert got[("fiml_arbitration_lag", (("partition", "0"),))] == 5
    assert got[("fiml_arbitration_checkpoint_age_seconds", (("partition", "0"),))] == 1.5


async def test_ingestion_counts_and_reports_its_losses_on_the_health_topic() -> None:
    cluster = FakeCluster()
    async with make(cluster, buffer_size=3) as producer:
        gate = await _stall(cluster, producer)  # Kafka does not take anything: an outage
        runner = IngestRunner(producer, [SimulatorProvider()])
        for i in range(1, 6):  # a live feed meets the full buffer: 2 dropped, counted
            producer.offer(tick(i))
        runner.report_losses()  # the report finds no room either: dropped too, retried later
        gate.set()
        await producer.flush()
        runner.report_losses()
        await producer.flush()
    reports = [
        decode(ProviderHealth, value)
        for _topic, key, value, _h in cluster.log
        if key == LOSS_REPORTER.encode()
    ]
    assert len(reports) == 1, reports
    # two ticks and the first report were lost; the second report says so
    assert reports[0].state == "degraded" and reports[0].errors == 3
    assert reports[0].reason is not None and "3 live records dropped" in reports[0].reason
    got = samples(generate_latest(registry_for(runner.readings)).decode())
    assert got[("fiml_ingest_records_total", (("outcome", "dropped"),))] == 3
    assert got[("fiml_ingest_records_total", (("outcome", "sent"),))] == len(cluster.log)
    assert got[("fiml_ingest_provider_state", (("provider", "sim"), ("state", "idle")))] == 1


def test_metrics_are_served_over_http_and_a_taken_port_is_not_fatal() -> None:
    port = free_port()
    assert serve(port, lambda: [])
    response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
    assert response.status_code == 200
    assert serve(port, lambda: []) is False  # taken: a warning, the agent runs on
