"""The one file that touches Faust: a Faust app whose consumer hands the worker whole fetches.

Faust keeps the consumer group's membership, the assignment of ``fiml.raw``'s partitions and
flow control during rebalances; nothing else. ``FaustBatchSource`` is the worker's
``BatchSource`` port on it (``ports.py``); ``create_app`` builds the app, ``every`` and
``on_stop`` hang the worker's timer and clean stop on it, ``run`` runs it.

Why private parts at all: Faust hands every record to its streams one by one: per record it
starts two tasks (``wait_first`` of the delivery and of the flow-control event), builds an
``Event``, puts it on a queue and takes it off again in the agent. That was about 40% of the
worker's CPU, more than the arbitration itself (docs/PERFORMANCE.md). Faust has no batch
consumer API, so ``BatchConsumer`` replaces the one method that pulls records in
(``_drain_messages``) and gives each fetch, as a list of aiokafka records, to the worker
(``_fetch``: Faust's ``getmany`` made a Faust message per record, the largest CPU cost left
once the arbitration was compiled). The worker never acks a record to Faust, so Faust commits
no offset of the raw topic: the worker's transactions do (``transactions.py``). The consumer
thread also keeps a fetch from returning records of partitions Faust has paused
(``OnlyThese``): Faust would drop them.

Every private attribute or method of Faust and aiokafka used here, each pinned by
``tests/unit/arbitration/test_faust_contract.py`` against the installed versions
(faust-streaming 0.15.3, aiokafka 0.14.0, pinned in pyproject.toml):

* ``faust.transport.drivers.aiokafka.Consumer``: subclassed. Overridden:
  ``_drain_messages(fetcher)`` and ``_new_consumer_thread()``. Used: ``_read_offset`` (the
  offset last taken, per partition), ``_add_gap(tp, offset_from, offset_to)``,
  ``_wait_next_records(timeout)`` (what ``getmany`` awaits: the fetched records per partition
  and the active partitions), ``flow_active``, ``perform_seek()``, ``_buffered_partitions``,
  ``_to_message(tp, record)``, ``callback``, ``wait_first``, ``suspend_flow``,
  ``consumer_stopped_errors``, ``seek``, ``assignment()``, ``highwater(tp)``.
* ``faust.transport.drivers.aiokafka.AIOKafkaConsumerThread``: subclassed. Overridden:
  ``_create_worker_consumer(transport)`` and
  ``_fetch_records(consumer, active_partitions, timeout, max_records)``.
* ``faust.transport.drivers.aiokafka.Transport.Consumer``: the consumer class a transport
  makes, replaced by ``BatchTransport``; ``App.transport`` is set to one before the consumer
  exists.
* ``faust.app.base.BootStrategy(app, enable_sensors=...)``: sensors off (per-record callbacks).
* aiokafka's ``AIOKafkaConsumer._fetch_max_wait_ms``: set before the consumer starts (no
  setter; read when its fetcher is made).
* aiokafka's ``Fetcher.fetched_records(partitions, timeout, max_records)`` tests only the truth
  of ``partitions`` and membership in it (``OnlyThese`` relies on it).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Set
from typing import Any, ClassVar, cast

import faust
import faust.app.base
from faust.transport.drivers import aiokafka as faust_kafka
from faust.types import TP

from agents.arbitration.worker.ports import RawRecord, SourceEvents

__all__ = [
    "FETCH_MAX_WAIT_MS",
    "BatchConsumer",
    "BatchHandler",
    "BatchTransport",
    "FaustBatchSource",
    "OnlyThese",
    "ResumeAt",
    "consume_in_batches",
    "create_app",
    "every",
    "on_stop",
    "run",
]

log = logging.getLogger("fiml.arbitration")

BatchHandler = Callable[[list[RawRecord]], Awaitable[None]]
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

    async def _fetch(self, timeout: float) -> list[tuple[TP, Any]]:  # noqa: ASYNC109
        """One fetch as (tp, aiokafka record) pairs, partition by partition in offset order:
        Faust's ``getmany`` without its per-record work. ``getmany`` makes a Faust ``Message``
        and tells the monitor the high-water mark for every record, and checks flow control
        and the generation at every yield, because its caller awaits between records; the
        worker takes a fetch whole, with no await in between, so the checks are made once.
        An aiokafka ``ConsumerRecord`` is a ``RawRecord`` (``ports.py``) as it is."""
        records, active = await self._wait_next_records(timeout)
        if records is None or self.should_stop:
            return []
        if not self.flow_active:  # as getmany: seek back to the committed offsets, take none
            try:
                await self.perform_seek()
            except Exception as exc:  # getmany's own handling: logged, not raised
                log.warning("exception performing seek when flow not active %s", exc)
            return []
        buffered = self._buffered_partitions
        return [
            (tp, record)
            for tp, rs in records.items()
            if active is None or tp in active or tp in buffered
            for record in rs
        ]

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
                batch: list[RawRecord] = []
                behind: set[Any] = set()  # sought back: the rest of this fetch comes again
                generation = self.app.consumer_generation_id
                for tp, message in await self._fetch(timeout=1.0):
                    if self.app.consumer_generation_id != generation:
                        break  # a rebalance during a seek below: as getmany, take no more
                    offset, last = message.offset, read_offsets[tp]
                    if (last is not None and offset < last) or tp in behind:
                        continue  # already taken: a fetch that raced a seek (as Faust skips it)
                    if message.topic not in mine:  # another topic: Faust's own path
                        if last is not None and offset - last > 1:
                            await self._add_gap(tp, last + 1, offset)
                        read_offsets[tp] = offset
                        await self.wait_first(
                            callback(self._to_message(tp, message)), self.suspend_flow.wait()
                        )
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


class FaustBatchSource:
    """The ``BatchSource`` port on a Faust app: ``topic``'s fetches and its partitions'
    assignments and revocations go to the worker (call ``feed`` before the app starts)."""

    def __init__(self, app: faust.App, topic: str) -> None:
        self._app = app
        self._topic = topic

    def feed(self, events: SourceEvents) -> None:
        app, name = self._app, self._topic
        source = app.topic(
            name, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
        )

        def mine(tps: Set[TP]) -> set[int]:
            return {tp.partition for tp in tps if tp.topic == name}

        async def assigned(sender: Any, /, *args: Any, signal: Any, **_: Any) -> None:
            await events.assigned(mine(args[0]))

        async def revoked(sender: Any, /, *args: Any, signal: Any, **_: Any) -> None:
            await events.revoked(mine(args[0]))

        async def handle(records: list[RawRecord]) -> None:
            await events.handle(records)

        def resume_at(topic: str, partition: int) -> int | None:
            return events.resume_offset(partition)

        app.on_partitions_assigned.connect(assigned)
        app.on_partitions_revoked.connect(revoked)
        consume_in_batches(app, source, handle, resume_at)

    def assignment(self) -> set[int]:
        return {tp.partition for tp in self._app.consumer.assignment() if tp.topic == self._topic}

    async def rewind(self, partition: int, offset: int) -> None:
        await self._app.consumer.seek(TP(self._topic, partition), offset)

    def end_offset(self, partition: int) -> int | None:
        high: int | None = self._app.consumer.highwater(TP(self._topic, partition))
        return high


def every(app: faust.App, seconds: float, tick: Callable[[], Awaitable[None]]) -> None:
    """Run ``tick`` every ``seconds`` while the app runs."""

    async def timer() -> None:
        await tick()

    app.timer(interval=seconds)(timer)


def on_stop(app: faust.App, stop: Callable[[], Awaitable[None]]) -> None:
    """Run ``stop`` when the app shuts down, before Faust stops its consumer and producer."""

    async def before_shutdown(sender: Any, /, *args: Any, signal: Any, **_: Any) -> None:
        await stop()

    app.on_before_shutdown.connect(before_shutdown)


def create_app(
    app_id: str,
    bootstrap: str,
    datadir: str,
    *,
    partitions: int,
    replication: int,
    batch_max: int,
    session_timeout_s: float,
) -> faust.App:
    """A Faust app for group membership only: no table (``store="memory://"`` because Faust
    wants one), no web server, no sensors. A new group starts at the raw topic's start."""
    app = faust.App(
        app_id,
        broker=",".join(f"kafka://{b}" for b in bootstrap.split(",")),
        datadir=datadir,
        store="memory://",  # no Faust table: the state is in the marks topic (transactions.py)
        web_enabled=False,
        topic_partitions=partitions,
        topic_replication_factor=replication,
        consumer_auto_offset_reset="earliest",  # a new group starts from the event log's start
        producer_linger_ms=5,
        broker_max_poll_records=batch_max,
        producer_acks=-1,
        # A SIGKILLed member holds its partitions until its session expires: a shorter session
        # makes a restarted worker take over sooner.
        broker_session_timeout=session_timeout_s,
        broker_heartbeat_interval=session_timeout_s / 10,
    )
    # Sensors cost per-record callbacks; this worker reports its own counts.
    app.boot_strategy = faust.app.base.BootStrategy(app, enable_sensors=False)
    return app


def run(app: faust.App, loglevel: str) -> None:
    """Run ``app`` as a Faust worker in this process, on uvloop, until it is stopped."""
    import uvloop
    from faust.worker import Worker

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    Worker(app, loglevel=loglevel).execute_from_commandline()
