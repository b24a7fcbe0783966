"""The publisher and the checkpoint store on Kafka: each raw partition's outputs, mark and
consumer offset in one Kafka transaction.

This is how Kafka Streams' exactly-once works, by hand on aiokafka's transactional producer
(Faust's changelog and its offset commits cannot join such a transaction, docs/RELIABILITY.md):

* a partition has its own producer, whose ``transactional.id`` is ``<app id>-<partition>``;
  starting it (``init_transactions``) aborts whatever a previous owner left open and fences that
  owner: a zombie (a worker stopped past its session timeout, then continued) fails on its next
  send or commit (``FencedError`` here) and lets the partition go, writing nothing a
  ``read_committed`` reader ever sees;
* the outputs of the partition's records go into the open transaction as they are made; every
  ``commit_ms`` the partition's mark (its whole state and the offset it ends at) is written to
  the marks topic, the consumer offset added with ``send_offsets_to_transaction``, and the
  transaction committed: outputs, state and position become visible together or not at all;
* a new owner starts the producer first (so nothing is still open), then reads the mark back
  with ``read_committed`` and resumes after it.

So a crash, a rebalance or a stall repeats no committed output and loses none: the derived
topics read with ``read_committed`` equal an uninterrupted run's, record for record.

Only aiokafka's public API is used here (the producer's transactions, ``create_batch`` and
``send_batch``, a ``read_committed`` consumer): this file needs no contract test. The private
parts of Faust and aiokafka the worker relies on are all in ``faust_adapter.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import InvalidProducerEpoch, ProducerFenced

from agents.arbitration.core.processor import Output
from agents.arbitration.worker.errors import FencedError
from infra.topics import ensure_topic
from schemas.topics import topic_name

__all__ = [
    "FENCED",
    "MARK_KEY",
    "MARK_MAX_BYTES",
    "KafkaCheckpointStore",
    "KafkaPublisher",
    "PartitionWriter",
    "marks_topic_configs",
    "quiet_fenced_leftovers",
    "read_mark",
]

log = logging.getLogger("fiml.arbitration")

#: The largest partition mark (one record: every symbol state of the partition) the worker can
#: save. A mark once passed Kafka's 1 MB default with thousands of symbols and stopped the
#: worker; the marks topic and the producers allow this much instead.
MARK_MAX_BYTES = 16 * 1024 * 1024
MARK_KEY = b"mark"  # one key per partition of the compacted marks topic
_BATCH_BYTES = 512 * 1024  # per topic-partition batch; under the broker's 1 MB default
#: What a producer raises once another one took its transactional id over.
FENCED = (ProducerFenced, InvalidProducerEpoch)


class KafkaPublisher:
    """The ``Publisher`` port on Kafka: a transactional producer per owned raw partition
    (``PartitionWriter``), committing the consumer offsets of ``raw_topic`` for ``group_id``
    and the marks to ``marks_topic``, which it creates when it first takes a partition over."""

    def __init__(
        self,
        bootstrap: str,
        app_id: str,
        raw_topic: str,
        marks_topic: str,
        partitions: int,
        transaction_timeout_ms: int = 60_000,
    ) -> None:
        self._bootstrap, self._app_id = bootstrap, app_id
        self._raw, self._marks, self._partitions = raw_topic, marks_topic, partitions
        self._transaction_timeout_ms = transaction_timeout_ms
        self._writers: dict[int, PartitionWriter] = {}
        self._ready = False

    async def take_over(self, partition: int) -> None:
        if not self._ready:  # once per worker, on its loop
            quiet_fenced_leftovers(asyncio.get_running_loop())
            await ensure_topic(
                self._bootstrap, self._marks, self._partitions, marks_topic_configs()
            )
            self._ready = True
        writer = PartitionWriter(
            self._bootstrap, self._app_id, partition, self._transaction_timeout_ms
        )
        await writer.start()
        self._writers[partition] = writer

    async def send(self, partition: int, outputs: Sequence[Output]) -> None:
        try:
            await self._writers[partition].send(outputs)
        except FENCED as exc:
            raise FencedError(partition, type(exc).__name__) from exc

    def in_transaction(self, partition: int) -> bool:
        writer = self._writers.get(partition)
        return writer is not None and writer.in_transaction

    async def commit(
        self, partition: int, checkpoint: bytes | None, next_offset: int | None
    ) -> None:
        offsets = (
            {TopicPartition(self._raw, partition): next_offset} if next_offset is not None else {}
        )
        try:
            await self._writers[partition].commit(self._marks, checkpoint, offsets, self._app_id)
        except FENCED as exc:
            raise FencedError(partition, type(exc).__name__) from exc

    async def release(self, partition: int) -> None:
        writer = self._writers.pop(partition, None)
        if writer is not None:
            await writer.stop()


class KafkaCheckpointStore:
    """The ``CheckpointStore`` port on Kafka: the marks topic, read with ``read_committed``."""

    def __init__(self, bootstrap: str, marks_topic: str) -> None:
        self._bootstrap = bootstrap
        self.where = marks_topic

    async def read(self, partition: int) -> bytes | None:
        return await read_mark(self._bootstrap, self.where, partition)


def marks_topic_configs() -> dict[str, str]:
    """The marks topic keeps the last mark of each partition (compacted) for ever."""
    return {
        "cleanup.policy": "compact",
        "retention.ms": "-1",
        "max.message.bytes": str(MARK_MAX_BYTES),
    }


class PartitionWriter:
    """The transactional producer of one raw partition's outputs and marks."""

    def __init__(
        self, bootstrap: str, app_id: str, partition: int, transaction_timeout_ms: int = 60_000
    ) -> None:
        self.partition = partition
        self.in_transaction = False
        self._producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap,
            transactional_id=f"{app_id}-{partition}",
            enable_idempotence=True,
            acks="all",
            linger_ms=5,
            max_batch_size=_BATCH_BYTES,
            max_request_size=MARK_MAX_BYTES,
            transaction_timeout_ms=transaction_timeout_ms,
        )
        self._names: dict[str, str] = {}
        self._committing: asyncio.Future[None] | None = None

    async def start(self) -> None:
        """Connect and take the transactional id over: the previous owner's open transaction
        is aborted and that owner fenced.

        Raises:
            KafkaError: (aiokafka) the broker cannot be reached.
        """
        await self._producer.start()

    async def stop(self) -> None:
        """Close the producer; an open transaction is left to the next owner (who aborts it)
        or to the transaction timeout."""
        await self._settle()
        await self._producer.stop()

    async def send(self, outputs: Sequence[Output]) -> None:
        """Write ``outputs`` in the open transaction (one is begun if none is) and wait until
        the broker has them (still invisible to ``read_committed`` readers).

        Raises:
            KafkaError: (aiokafka) among them ``ProducerFenced`` when another worker owns the
                partition now.
        """
        await self._settle()
        await self._begin()
        await send_all(self._producer, outputs, self._names)

    async def commit(
        self,
        marks_topic: str,
        mark: bytes | None,
        offsets: dict[TopicPartition, int],
        group_id: str,
    ) -> None:
        """Add the mark and the consumer offsets to the transaction and commit it.

        The commit runs to its end even if the caller is cancelled (a worker stopping while a
        timer commits): a commit cut in the middle would leave this writer believing a
        transaction is open that the broker already committed, and the stop's own commit then
        failed ("Not in the middle of a transaction"). The next call waits for it.

        Raises:
            KafkaError: (aiokafka) the commit failed, or the producer was fenced.
        """
        await self._settle()
        self._committing = asyncio.ensure_future(self._commit(marks_topic, mark, offsets, group_id))
        await asyncio.shield(self._committing)

    async def _commit(
        self,
        marks_topic: str,
        mark: bytes | None,
        offsets: dict[TopicPartition, int],
        group_id: str,
    ) -> None:
        await self._begin()
        if mark is not None:
            await (
                await self._producer.send(marks_topic, mark, key=MARK_KEY, partition=self.partition)
            )
        if offsets:
            await self._producer.send_offsets_to_transaction(offsets, group_id)
        await self._producer.commit_transaction()
        self.in_transaction = False

    async def _settle(self) -> None:
        """Wait for a commit a cancelled caller left running (its error was that caller's)."""
        running = self._committing
        if running is not None and not running.done():
            with contextlib.suppress(Exception):
                await running

    async def _begin(self) -> None:
        if not self.in_transaction:
            await self._producer.begin_transaction()
            self.in_transaction = True


def quiet_fenced_leftovers(loop: asyncio.AbstractEventLoop) -> None:
    """Keep a fenced producer's expected failures out of the error log.

    aiokafka's ``send_batch`` hands the caller ``asyncio.shield(batch.future)``: when the
    producer is fenced, the caller gets ``ProducerFenced`` (and the worker lets the partition
    go), but the shielded inner futures keep theirs unretrieved, and asyncio logs each one as
    a traceback ("Future exception was never retrieved") when it is collected. Those are logged
    at debug level; every other unhandled error goes to the handler there was before.
    """
    previous = loop.get_exception_handler()

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if isinstance(context.get("exception"), FENCED) and "never retrieved" in str(
            context.get("message", "")
        ):
            log.debug("a fenced producer's batch failed: %s", context.get("exception"))
            return
        if previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handler)


async def read_mark(
    bootstrap: str, topic: str, partition: int, timeout_s: float = 60.0
) -> bytes | None:
    """The last committed mark of ``partition`` (None if it has none), read with
    ``read_committed``: a mark of an aborted transaction is never restored.

    Raises:
        asyncio.TimeoutError: the end of the partition was not reached within ``timeout_s``.
        KafkaError: (aiokafka) the broker cannot be reached.
    """
    tp = TopicPartition(topic, partition)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        isolation_level="read_committed",
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=MARK_MAX_BYTES,
        fetch_max_bytes=MARK_MAX_BYTES,
    )
    await consumer.start()
    found: bytes | None = None
    try:
        consumer.assign([tp])
        # Seek first: asked after end_offsets, aiokafka's position answered the end offset
        # (nothing was read, and a restarted worker began from nothing).
        await consumer.seek_to_beginning(tp)
        end = (await consumer.end_offsets([tp]))[tp]  # the last stable offset

        async def drain() -> None:
            nonlocal found
            while await consumer.position(tp) < end:
                for records in (await consumer.getmany(tp, timeout_ms=500)).values():
                    for r in records:
                        if r.key == MARK_KEY and r.value:
                            found = r.value

        await asyncio.wait_for(drain(), timeout_s)
    finally:
        await consumer.stop()
    return found


async def send_all(
    producer: AIOKafkaProducer, outputs: Sequence[Output], names: dict[str, str]
) -> None:
    """Send ``outputs`` and wait until every one is delivered.

    Records with a partition go into one ``BatchBuilder`` per topic-partition (in output order,
    so each partition keeps the order of the outputs) submitted with ``send_batch``: a coroutine
    per batch instead of one per record. Records without a partition (dead letters, rare) go
    through ``send`` and the partitioner. Nothing is awaited per record; all deliveries are
    awaited once at the end.
    """
    builders: dict[tuple[str, int], Any] = {}
    full: list[tuple[str, int, Any]] = []
    pending: list[Any] = []
    for logical, key, value, partition, headers in outputs:
        name = names.get(logical) or names.setdefault(logical, topic_name(logical))
        if partition is None:
            pending.append(await producer.send(name, value, key=key, headers=headers))
            continue
        tp = (name, partition)
        builder = builders.get(tp)
        if builder is None:
            builder = builders[tp] = producer.create_batch()
        if builder.append(key=key, value=value, timestamp=None, headers=headers) is None:
            full.append((name, partition, builder))  # full: start another
            builder = builders[tp] = producer.create_batch()
            if builder.append(key=key, value=value, timestamp=None, headers=headers) is None:
                raise ValueError(f"record too large for a batch ({len(value)} bytes)")
    full.extend((name, p, b) for (name, p), b in builders.items())
    for name, p, builder in full:
        builder.close()
        pending.append(await producer.send_batch(builder, name, partition=p))
    # Every delivery is awaited, failed ones too: a fenced producer fails them all, and an
    # exception left in a future nobody awaited is logged as a traceback at exit.
    for outcome in await asyncio.gather(*pending, return_exceptions=True):
        if isinstance(outcome, BaseException):
            raise outcome
