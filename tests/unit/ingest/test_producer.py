"""The ingest producer against an in-memory Kafka client (the ``client_factory`` seam)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import pytest
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaTimeoutError,
    LeaderNotAvailableError,
    MessageSizeTooLargeError,
)

from agents.deadletter import REASON_HEADER
from agents.ingest.base import Event, Rejected
from agents.ingest.errors import ProducerClosedError
from agents.ingest.producer import IngestProducer
from agents.ingest.simulator import TRUTH_PROVIDER
from schemas.records import AssetType, ProviderHealth, RawTick, RawTrade
from schemas.topics import topic_name

Sent = tuple[str, bytes | None, bytes, list[tuple[str, bytes]] | None]
# A script entry decides the fate of one send: None delivers it; an exception instance is
# raised by send(); ("fail", exc) accepts it and fails its delivery; ("hold", event) accepts it
# and delivers it once the event is set.
Fate = Any


class FakeKafka:
    """One in-memory client; ``cluster.log`` is what the "broker" has written."""

    def __init__(self, cluster: FakeCluster, options: dict[str, Any]) -> None:
        self.cluster = cluster
        self.options = options
        self.sent = 0
        self.stopped = False

    async def start(self) -> None:
        if self.cluster.start_failures:
            self.cluster.start_failures -= 1
            raise KafkaConnectionError("no broker")

    async def stop(self) -> None:
        self.stopped = True
        if self.cluster.hang_on_stop:
            await asyncio.Event().wait()

    async def send(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        *,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> asyncio.Future[Any]:
        assert not self.stopped, "send on a retired client"
        record: Sent = (topic, key, value or b"", headers)
        self.cluster.attempts.append(record)
        self.sent += 1
        fate = self.cluster.script.pop(0) if self.cluster.script else None
        if isinstance(fate, BaseException):
            raise fate
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if fate is None:
            self.cluster.log.append(record)
            future.set_result(None)
        elif fate[0] == "fail":
            future.set_exception(fate[1])
        else:
            gate: asyncio.Event = fate[1]

            async def deliver() -> None:
                await gate.wait()
                self.cluster.log.append(record)
                future.set_result(None)

            self.cluster.tasks.append(asyncio.create_task(deliver()))
        return future


class FakeCluster:
    """The ``client_factory``: makes ``FakeKafka`` clients that share one log and script."""

    def __init__(self, script: list[Fate] | None = None) -> None:
        self.script = list(script or [])
        self.log: list[Sent] = []
        self.attempts: list[Sent] = []
        self.clients: list[FakeKafka] = []
        self.tasks: list[asyncio.Task[None]] = []
        self.start_failures = 0
        self.hang_on_stop = False

    def __call__(self, **options: Any) -> FakeKafka:
        client = FakeKafka(self, options)
        self.clients.append(client)
        return client


def tick(seq: int, symbol: str = "BTC/USDT", provider: str = "p") -> RawTick:
    return RawTick(
        provider=provider, symbol=symbol, provider_symbol=symbol, asset_type=AssetType.CRYPTO,
        price=100.0 + seq, event_time_ms=1_000 + seq, ingest_time_ms=2_000 + seq, seq=seq,
    )  # fmt: skip


def trade(seq: int) -> RawTrade:
    return RawTrade(
        provider="p", symbol="ETH/USDT", provider_symbol="ETHUSDT", asset_type=AssetType.CRYPTO,
        trade_id=f"t{seq}", price=3_000.0, amount=0.5, side="buy", event_time_ms=1_000,
        ingest_time_ms=2_000, seq=seq,
    )  # fmt: skip


def make(cluster: FakeCluster, **options: Any) -> IngestProducer:
    options.setdefault("reconnect_backoff", (0.001, 0.001))
    return IngestProducer("fake:9092", client_factory=cluster, **options)


async def run(cluster: FakeCluster, events: list[Event], **options: Any) -> IngestProducer:
    async with make(cluster, **options) as producer:
        for event in events:
            await producer.put(event)
        await producer.flush()
    return producer


async def test_client_options_are_idempotent_acks_all_with_a_long_timeout() -> None:
    cluster = FakeCluster()
    await run(cluster, [])
    options = cluster.clients[0].options
    assert options["enable_idempotence"] is True and options["acks"] == "all"
    assert options["request_timeout_ms"] == 300_000  # rides out a five-minute outage
    assert cluster.clients[0].stopped


async def test_each_event_type_goes_to_its_topic_with_its_key() -> None:
    health = ProviderHealth(provider="p", state="up", event_time_ms=1)
    truth = tick(0, provider=TRUTH_PROVIDER)
    rejected = Rejected(provider="p", payload=b'{"bad": 1}', reason="no price", key="BTC/USDT")
    cluster = FakeCluster()
    producer = await run(cluster, [tick(1), trade(2), health, truth, rejected])
    routed = [(topic, key) for topic, key, _, _ in cluster.log]
    assert routed == [
        (topic_name("fiml.raw"), b"BTC/USDT"),
        (topic_name("fiml.raw"), b"ETH/USDT"),
        (topic_name("fiml.provider.health"), b"p"),
        (topic_name("fiml.sim.truth"), b"BTC/USDT"),
        (topic_name("fiml.deadletter"), b"BTC/USDT"),
    ]
    assert cluster.log[4][2] == b'{"bad": 1}'  # the original payload, untouched
    assert dict(cluster.log[4][3] or [])[REASON_HEADER] == b"no price"
    assert all(headers is None for _, _, _, headers in cluster.log[:4])
    assert (producer.stats.sent, producer.stats.deadlettered, producer.stats.failed) == (4, 1, 0)


async def test_invalid_records_are_deadlettered_with_the_reason() -> None:
    bad_symbol = tick(0).model_copy(update={"symbol": "btc-usdt"})
    bad_price = RawTick.model_construct(**{**tick(1).model_dump(), "price": -5.0})
    cluster = FakeCluster()
    producer = await run(cluster, [bad_symbol, bad_price, tick(2)])
    topics = [topic for topic, _, _, _ in cluster.log]
    assert topics == [topic_name("fiml.deadletter")] * 2 + [topic_name("fiml.raw")]
    reasons = [dict(headers or [])[REASON_HEADER].decode() for _, _, _, headers in cluster.log[:2]]
    assert reasons[0].startswith("invalid RawTick:") and "canonical" in reasons[0]
    assert reasons[1].startswith("invalid RawTick:") and "price" in reasons[1]
    assert cluster.log[0][1] == b"btc-usdt"  # the key it came with
    assert (producer.stats.deadlettered, producer.stats.sent) == (2, 1)


async def test_order_is_kept_per_key() -> None:
    events: list[Event] = [tick(i, "BTC/USDT" if i % 3 else "ETH/USDT") for i in range(50)]
    cluster = FakeCluster()
    await run(cluster, events, max_batch=7)
    assert [value for _, _, value, _ in cluster.log] == [
        value for _, _, value, _ in cluster.attempts
    ]
    assert len(cluster.log) == 50


async def _stall(cluster: FakeCluster, producer: IngestProducer) -> asyncio.Event:
    """Make the sender hold its first record in flight until the returned event is set."""
    gate = asyncio.Event()
    cluster.script = [("hold", gate)]
    producer.offer(tick(0))
    for _ in range(5):
        await asyncio.sleep(0)  # the sender takes it and waits on its delivery
    assert producer.queued == 0
    return gate


async def test_offer_drops_and_counts_when_the_buffer_is_full(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cluster = FakeCluster()
    async with make(cluster, buffer_size=3) as producer:
        gate = await _stall(cluster, producer)
        accepted = [producer.offer(tick(i)) for i in range(1, 6)]
        assert accepted == [True, True, True, False, False]
        assert (producer.stats.dropped, producer.stats.buffer_full, producer.queued) == (2, 2, 3)
        gate.set()
        await producer.flush()
    assert (producer.stats.sent, producer.stats.dropped, producer.stats.failed) == (4, 2, 0)
    assert "ingest buffer full (3 records): dropped a record" in caplog.text


async def test_put_waits_for_room_instead_of_dropping() -> None:
    cluster = FakeCluster()
    async with make(cluster, buffer_size=2) as producer:
        gate = await _stall(cluster, producer)
        await producer.put(tick(1))
        await producer.put(tick(2))
        blocked = asyncio.create_task(producer.put(tick(3)))
        await asyncio.sleep(0.01)
        assert not blocked.done() and producer.stats.buffer_full == 1
        gate.set()
        await blocked
        await producer.flush()
    assert (producer.stats.sent, producer.stats.dropped) == (4, 0)


async def test_a_failed_delivery_is_counted_never_resent_and_the_client_replaced(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # aiokafka gave up on record 1 (a batch expired while its partition had no leader); the
    # old producer id now has a sequence gap, so later records go through a new client.
    cluster = FakeCluster([None, ("fail", LeaderNotAvailableError())])
    producer = await run(cluster, [tick(i) for i in range(4)], max_batch=2)
    assert (producer.stats.sent, producer.stats.failed, producer.stats.reconnects) == (3, 1, 1)
    assert len(cluster.attempts) == 4, "the failed record was not sent again"
    assert [client.sent for client in cluster.clients] == [2, 2]
    assert cluster.clients[0].stopped
    assert "gave up on 1 record(s)" in caplog.text and "LeaderNotAvailable" in caplog.text
    assert any(r.levelno == logging.ERROR for r in caplog.records)


async def test_a_refused_send_fails_that_record_and_the_rest_go_through_a_new_client() -> None:
    cluster = FakeCluster([None, KafkaTimeoutError()])
    producer = await run(cluster, [tick(i) for i in range(4)])
    assert (producer.stats.sent, producer.stats.failed, producer.stats.reconnects) == (3, 1, 1)
    refused = cluster.attempts[1]
    assert refused not in cluster.log  # counted as failed, not sent again
    assert cluster.log == [record for record in cluster.attempts if record != refused]
    assert [client.sent for client in cluster.clients] == [2, 2]


async def test_a_record_error_fails_only_that_record() -> None:
    cluster = FakeCluster([MessageSizeTooLargeError()])
    producer = await run(cluster, [tick(i) for i in range(3)])
    assert (producer.stats.sent, producer.stats.failed, producer.stats.reconnects) == (2, 1, 0)
    assert len(cluster.clients) == 1


async def test_an_unreachable_broker_is_retried_until_it_answers() -> None:
    cluster = FakeCluster([("fail", LeaderNotAvailableError())])
    async with make(cluster) as producer:
        await producer.put(tick(0))
        await producer.flush()  # failed: the client is retired
        cluster.start_failures = 3  # the next three clients find no broker
        await producer.put(tick(1))
        await producer.flush()
    assert (producer.stats.sent, producer.stats.failed, producer.stats.reconnects) == (1, 1, 1)
    assert len(cluster.clients) == 5  # first, three that could not start, the one that did
    assert all(client.stopped for client in cluster.clients)


async def test_start_failure_is_raised_and_the_client_released() -> None:
    cluster = FakeCluster()
    cluster.start_failures = 1
    producer = make(cluster)
    with pytest.raises(KafkaConnectionError):
        await producer.start()
    assert cluster.clients[0].stopped
    with pytest.raises(ProducerClosedError):
        producer.offer(tick(0))


async def test_stop_counts_what_was_not_delivered(caplog: pytest.LogCaptureFixture) -> None:
    cluster = FakeCluster()
    producer = make(cluster, buffer_size=10)
    await producer.start()
    await _stall(cluster, producer)  # never released: the broker never confirms
    for i in range(1, 4):
        await producer.put(tick(i))
    await producer.stop(timeout=0.05)
    assert (producer.stats.sent, producer.stats.failed) == (0, 4)
    assert "not delivered when the producer stopped" in caplog.text
    assert "not confirmed when the producer stopped" in caplog.text
    with pytest.raises(ProducerClosedError):
        await producer.put(tick(9))
    for task in cluster.tasks:
        task.cancel()
    await asyncio.gather(*cluster.tasks, return_exceptions=True)


async def test_what_is_delivered_while_closing_counts_as_sent() -> None:
    cluster = FakeCluster()
    producer = make(cluster)
    await producer.start()
    gate = await _stall(cluster, producer)
    original_stop = FakeKafka.stop

    async def stop_delivers(self: FakeKafka) -> None:  # aiokafka's stop flushes its batches
        gate.set()
        await asyncio.gather(*cluster.tasks)
        await original_stop(self)

    cluster.clients[0].stop = stop_delivers.__get__(cluster.clients[0])  # type: ignore[method-assign]
    await producer.stop(timeout=0.05)
    assert (producer.stats.sent, producer.stats.failed) == (1, 0)


async def test_a_client_that_cannot_close_is_abandoned_within_the_budget() -> None:
    cluster = FakeCluster()
    producer = make(cluster)
    await producer.start()
    cluster.hang_on_stop = True
    loop: Callable[[], float] = asyncio.get_running_loop().time
    started = loop()
    await producer.stop(timeout=0.01)  # the close gets at least 1 s, then is given up
    assert loop() - started < 3


async def test_a_producer_runs_once() -> None:
    cluster = FakeCluster()
    producer = await run(cluster, [])
    with pytest.raises(ProducerClosedError):
        await producer.start()
    await producer.stop()  # a second stop is a no-op
