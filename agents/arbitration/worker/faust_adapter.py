"""Faust's Kafka consumer, feeding the raw topics to one callback per fetched batch.

Faust hands every record to its streams one by one: per record it starts two tasks
(``wait_first`` of the delivery and of the flow-control event), builds an ``Event``, puts it on
a queue and takes it off again in the agent. That was about 40% of the worker's CPU, more than
the arbitration itself (docs/PERFORMANCE.md). Faust has no batch consumer API, so this subclass
replaces the one method that pulls records in (``_drain_messages``; the faust-streaming version
is pinned in pyproject.toml) and gives each ``getmany`` result, as a list, to ``on_batch``.

Everything else stays Faust's: the consumer group and partition assignment, flow control during
rebalances, and records of any other topic (a table's changelog, handed to Faust's own callback
as before). ``on_batch`` owns the records it is given; the arbitration never acks them to Faust,
so Faust commits no offset of these topics: the worker's transactions do (``agent.py``,
``transactions.py``). Faust does not wait for a running batch before it gives a partition away;
the application does (``agent.py``). The consumer thread also keeps a fetch from returning
records of partitions Faust has paused (``OnlyThese``): Faust would drop them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar, cast

import faust
from faust.transport.drivers import aiokafka as faust_kafka
from faust.types import Message

__all__ = ["BatchConsumer", "BatchHandler", "BatchTransport", "ResumeAt", "consume_in_batches"]

log = logging.getLogger("fiml.arbitration")

BatchHandler = Callable[[list[Message]], Awaitable[None]]
#: How long the broker may hold a fetch for partitions with no new records (aiokafka's
#: default is 500 ms, Faust's 1,500 ms); an idle worker makes ~50 cheap requests a second.
FETCH_MAX_WAIT_MS = 20
#: (topic, partition) -> the offset the saved state resumes from, None if unknown
ResumeAt = Callable[[str, int], int | None]


class BatchConsumer(faust_kafka.Consumer):
    """Records of ``batch_topics`` go to ``on_batch`` a fetch at a time; others as usual."""

    batch_topics: frozenset[str] = frozenset()
    on_batch: BatchHandler | None = None
    resume_at: ResumeAt | None = None

    def _new_consumer_thread(self) -> faust_kafka.AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def _drain_messages(self, fetcher: Any) -> None:
        on_batch = self.on_batch
        if on_batch is None:
            await super()._drain_messages(fetcher)
            return
        mine = self.batch_topics
        callback = self.callback
        read_offsets = self._read_offset
        rewound: dict[Any, int] = {}  # tp -> the offset it was last sought back to
        try:
            while not (self.should_stop or fetcher.should_stop):
                batch: list[Message] = []
                behind: set[Any] = set()  # sought back: the rest of this fetch comes again
                # Faust's getmany applies flow control, the partitions paused during recovery and
                # the generation check of a rebalance; it yields Faust messages.
                async for tp, message in self.getmany(timeout=1.0):
                    offset, last = message.offset, read_offsets[tp]
                    if (last is not None and offset < last) or tp in behind:
                        continue  # already taken: a fetch that raced a seek (as Faust skips it)
                    if message.topic not in mine:  # the table's changelog: Faust's own path
                        if last is not None and offset - last > 1:
                            await self._add_gap(tp, last + 1, offset)
                        read_offsets[tp] = offset
                        await self.wait_first(callback(message), self.suspend_flow.wait())
                        continue
                    # The raw topics have no holes: a record past the next expected one
                    # means records were fetched and dropped. Faust's getmany drops the rest
                    # of a fetch that a rebalance interrupts, and the consumer's position is
                    # already past it (two workers lost ~100 records per rebalance,
                    # tests/integration). So after an assignment the first record must be the
                    # one the saved state expects (``resume_at``), and later ones follow
                    # without a hole; otherwise seek back once. A hole still there after that
                    # is real (e.g. a transaction marker) and is skipped as Faust does.
                    if last is not None:
                        expected: int | None = last + 1
                    elif self.resume_at is not None:
                        expected = self.resume_at(message.topic, message.partition)
                    else:
                        expected = None
                    if expected is not None and offset > expected:
                        if rewound.get(tp) != expected:
                            log.info(
                                "%s[%d]: fetched from offset %d, the saved state ends "
                                "before %d: going back there",
                                message.topic,
                                message.partition,
                                offset,
                                expected,
                            )
                            rewound[tp] = expected
                            behind.add(tp)
                            await self.seek(tp, expected)
                            continue
                        await self._add_gap(tp, expected, offset)
                    read_offsets[tp] = offset
                    batch.append(message)
                if batch:
                    await on_batch(batch)
                await self.sleep(0)  # let commits, heartbeats and rebalances in between fetches
        except asyncio.CancelledError:
            # Faust cancels this task when the worker stops; stopping during a rebalance
            # would otherwise "restart on rebalance" a fetcher with no supervisor, a crash
            # in the log. Faust's own loop returns here too.
            if self.app.should_stop:
                return
            raise
        except self.consumer_stopped_errors:
            if self.app.should_stop:
                return
            raise


class _ConsumerThread(faust_kafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # Faust fixes the broker's fetch wait at 1.5 s. aiokafka keeps one fetch in flight per
        # broker, and partitions whose records are still buffered wait out the fetch of the
        # idle ones: with one quiet partition a busy one stalled 0.7-1.4 s between fetches.
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS  # noqa: SLF001 (no setter; read at start)
        return consumer

    async def _fetch_records(
        self,
        consumer: Any,
        active_partitions: set[Any],
        timeout: float | None = None,  # noqa: ASYNC109 (Faust's signature)
        max_records: int | None = None,
    ) -> Any:
        # typed as a set by Faust; aiokafka only tests its truth and membership
        only = cast(set[Any], OnlyThese(active_partitions))
        return await super()._fetch_records(
            consumer, only, timeout=timeout, max_records=max_records
        )


class OnlyThese:
    """The partitions a fetch may return records of: Faust's live set of active partitions,
    except that an empty set means none.

    aiokafka's ``fetched_records`` reads an empty set as "every partition". Faust hands it its
    live set, which a rebalance empties (everything paused) while the fetch waits: the fetch
    then returned the records of paused partitions, Faust dropped them, and aiokafka's position
    was already past them. When one was a state table's changelog record, the recovery that
    followed waited forever for it (two workers, about one rebalance in 40 under load).
    """

    __slots__ = ("_live",)

    def __init__(self, live: set[Any]) -> None:
        self._live = live

    def __bool__(self) -> bool:
        return True

    def __contains__(self, tp: object) -> bool:
        return tp in self._live


class BatchTransport(faust_kafka.Transport):
    Consumer: ClassVar[type[faust_kafka.Consumer]] = BatchConsumer


def consume_in_batches(
    app: faust.App, topic: faust.TopicT, on_batch: BatchHandler, resume_at: ResumeAt | None = None
) -> None:
    """Subscribe ``app`` to ``topic`` and hand its records to ``on_batch``, a fetch at a time
    (call before the app starts); it saves what they did and commits their offsets itself.
    ``on_batch`` raising stops the worker: the records whose offsets were not committed are
    consumed again after a restart. ``resume_at(topic, partition)`` tells where the
    application's saved state ends, checked after every assignment."""
    if not isinstance(app.transport, BatchTransport):
        app.transport = BatchTransport(app.conf.broker_consumer, app)
    consumer = app.consumer
    if not isinstance(consumer, BatchConsumer):
        raise RuntimeError(
            "the app's consumer was created before consume_in_batches: "
            "call consume_in_batches first"
        )
    consumer.batch_topics = frozenset(topic.topics)
    consumer.on_batch = on_batch
    consumer.resume_at = resume_at
    app.topics.add(topic)
