"""The arbitration step of the worker: Faust for partitions, the state table and recovery;
whole fetched batches for speed.

Per batch (one consumer fetch, ``batches.py``): every record goes through the ``Processor``;
the outputs go out through a plain aiokafka producer (``send_batch``, a coroutine per
topic-partition rather than per record) and their delivery is awaited. About once a second
each changed partition's mark (its symbol states, merge queues and the ``fiml.ohlcv`` offset the
fence of a restarted worker starts from, ``fence.py``) is written to the table, and only then
are that partition's records acked: an offset is never committed ahead of the outputs and the
state it produced. A restarted worker resumes from its marks (``batches.py``).
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
from collections.abc import Callable, Iterable
from typing import Any

import faust
import orjson
from aiokafka import AIOKafkaProducer
from faust.types import TP, Message

from agents.arbitration.batches import consume_in_batches
from agents.arbitration.fence import mark_key, read_fence
from agents.arbitration.metrics import WorkerCounters, readings
from agents.arbitration.processor import TICKS, TRADES, Output, Processor
from agents.arbitration.settings import ArbitrationSettings
from agents.metrics import serve
from schemas.topics import TOPICS, topic_name

__all__ = ["MARK_MAX_BYTES", "STATE_TABLE", "attach", "source_name"]

STATE_TABLE = "arbitration-state"
log = logging.getLogger("fiml.arbitration")
_BATCH_BYTES = 512 * 1024  # per topic-partition batch; under the broker's 1 MB default
#: The largest partition mark (one changelog record: every symbol state and the merge queues)
#: the worker can save. A mark once passed Kafka's 1 MB default when a catch-up held thousands
#: of ticks ahead of a lagging trades topic, and the worker stopped; the changelog topic and
#: Faust's producer allow this much instead (app.py).
MARK_MAX_BYTES = 16 * 1024 * 1024


def attach(app: faust.App, bootstrap: str, settings: ArbitrationSettings,
           source_prefix: str | None = None) -> None:
    """Declare the state table and the agent on ``app``. The raw topics are read under
    ``source_prefix`` when given (``fiml rebuild``), else under ``FIML_TOPIC_PREFIX``."""
    kinds = {source_name(TICKS, source_prefix): TICKS, source_name(TRADES, source_prefix): TRADES}
    names = {kind: name for name, kind in kinds.items()}
    out_names: dict[str, str] = {}
    # key_type/value_type bytes (not a Schema): recovery picks its changelog serializers from
    # the types, and falls back to JSON otherwise, which fails on these raw bytes and then
    # waits forever ("Error in recovery", found with a SIGKILL + restart).
    table = app.Table(STATE_TABLE, key_type=bytes, value_type=bytes,
                      partitions=app.conf.topic_partitions,
                      extra_topic_configs={"max.message.bytes": str(MARK_MAX_BYTES)})
    source = app.topic(*kinds, key_type=bytes, value_type=bytes, key_serializer="raw",
                       value_serializer="raw")

    def load_mark(partition: int) -> bytes | None:
        value: bytes | None = table.data.get(mark_key(partition))
        return value

    processor = Processor(settings, load_mark)
    seen: dict[tuple[str, int], int] = {}  # (topic, partition) -> last offset taken

    def caught_up_in(partition: int) -> Callable[[str], bool]:
        # Asked once per released record; nothing changes during one (synchronous) release,
        # so each answer is computed once per kind.
        known: dict[str, bool] = {}

        def caught_up(kind: str) -> bool:
            answer = known.get(kind)
            if answer is None:
                topic = names[kind]
                high = app.consumer.highwater(TP(topic, partition))
                answer = known[kind] = (
                    high is not None and seen.get((topic, partition), -1) + 1 >= high)
            return answer
        return caught_up

    fenced: set[int] = set()
    ohlcv = topic_name("fiml.ohlcv")

    # Checkpoints. A partition's mark is one record holding its symbol states, merge queues and
    # fiml.ohlcv offset (so a crash never leaves some symbols of a batch saved and others not),
    # written through the table's public store and changelog with the source partition given,
    # so the table stays co-partitioned with the raw topics. It is written at most every
    # ``checkpoint_ms`` per partition, not per batch: per batch, at 1,000 ticks/s in batches of
    # ten, the marks were 27 times the raw input. A record is acked when its partition's mark
    # is written, and Faust flushes the changelog before it commits, so a committed offset
    # never runs ahead of the saved state (Faust seeks to committed offsets on its own, and
    # would skip records otherwise). A restart repeats the outputs since the last mark, except
    # the final candles the fence (``fence.py``) finds already written.
    saved_at: dict[int, float] = {}  # partition -> time.monotonic() of its last saved mark
    ohlcv_after: dict[int, int] = {}  # partition -> fiml.ohlcv offset after the last batch
    unacked: dict[int, list[Message]] = {}  # partition -> records taken since its last mark
    idle = asyncio.Event()  # no batch between its first record and its delivery
    idle.set()

    def unsaved() -> set[int]:
        """Partitions with a changed mark or records not yet acked."""
        return processor.marks | unacked.keys()

    def due() -> set[int]:
        """Unsaved partitions whose last mark is ``checkpoint_ms`` old."""
        now, every = time.monotonic(), settings.checkpoint_ms / 1000
        return {p for p in unsaved() if now - saved_at.get(p, -math.inf) >= every}

    def checkpoint(partitions: Iterable[int]) -> None:
        now = time.monotonic()
        for partition in sorted(partitions):
            if partition in processor.marks:
                key = mark_key(partition)
                data = processor.mark(partition, ohlcv_after.pop(partition, None))
                table.data[key] = data
                table.send_changelog(partition, key, data)
            for message in unacked.pop(partition, ()):
                app.consumer.ack(message)
            saved_at[partition] = now

    async def _checkpoint_when_quiet() -> None:
        # after the last batch of a burst, nothing else would save it (nor ack its records)
        if idle.is_set():
            checkpoint(due())

    app.timer(interval=settings.checkpoint_ms / 1000)(_checkpoint_when_quiet)

    @app.on_partitions_revoked.connect
    async def _forget(sender: Any, /, *args: Any, signal: Any, **_: Any) -> None:
        revoked = {tp.partition for tp in args[0]}
        await idle.wait()  # the running batch finishes first, so its states are whole
        checkpoint(revoked & unsaved())
        await app.producer.flush()  # the next owner's recovery reads these marks
        await app.consumer.commit()
        processor.forget(revoked)
        fenced.difference_update(revoked)
        for p in revoked:
            saved_at.pop(p, None)
            ohlcv_after.pop(p, None)

    @app.on_partitions_assigned.connect
    async def _assigned(sender: Any, /, *args: Any, signal: Any, **_: Any) -> None:
        mine = sorted({tp.partition for tp in args[0] if tp.topic in kinds})
        log.info("raw partitions assigned: %s", ", ".join(map(str, mine)) or "none")

    async def fence(partitions: set[int]) -> None:
        for p in sorted(partitions - fenced):
            mark = table.data.get(mark_key(p))
            start = int(orjson.loads(mark)[1]) if mark else 0
            found = await read_fence(bootstrap, ohlcv, p, start)
            processor.set_fence(p, found)
            fenced.add(p)
            log.info("partition %d: fence from %s offset %d: %d series", p, ohlcv, start,
                     len(found))

    producers: list[AIOKafkaProducer] = []  # one, made on the worker's loop at the first batch

    counters = WorkerCounters()

    def lag() -> dict[int, int]:
        out: dict[int, int] = {}
        for (topic, partition), last in list(seen.items()):
            high = app.consumer.highwater(TP(topic, partition))
            if high is not None:
                out[partition] = out.get(partition, 0) + max(0, high - last - 1)
        return out

    def checkpoint_age_s() -> dict[int, float]:
        now = time.monotonic()
        return {p: now - at for p, at in list(saved_at.items())}

    port = os.environ.get("FIML_ARB_METRICS_PORT")
    if port:
        serve(int(port), lambda: readings(processor, counters, lag, checkpoint_age_s))

    async def arbitrate(messages: list[Message]) -> None:
        idle.clear()
        if not producers:
            producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all",
                                        enable_idempotence=True, linger_ms=5,
                                        max_batch_size=_BATCH_BYTES)
            await producer.start()
            producers.append(producer)
        producer = producers[0]
        partitions = {m.partition for m in messages}
        await fence(partitions)
        counters.batches += 1
        for m in messages:
            # a tombstone (no value) is malformed here: it goes to the dead letters
            kind = kinds[m.topic]
            counters.records_in[kind] = counters.records_in.get(kind, 0) + 1
            processor.admit(kind, m.key, m.value or b"", m.partition, m.offset)
            seen[m.topic, m.partition] = m.offset
            unacked.setdefault(m.partition, []).append(m)
        for p in sorted(partitions):
            processor.release(p, caught_up_in(p))
        outputs = processor.drain()
        for out in outputs:
            counters.records_out[out[0]] = counters.records_out.get(out[0], 0) + 1
        # Delivered before the checkpoint acks the records: an error here stops the worker and
        # they are consumed again after a restart (at least once).
        for partition, end in (await send_all(producer, outputs, out_names, ohlcv)).items():
            ohlcv_after[partition] = end
        checkpoint(due())
        idle.set()
        if processor.poison:
            log.warning("%d poison record(s) sent to the dead-letter topic", processor.poison)
            counters.dead_letters += processor.poison
            processor.poison = 0

    @app.on_before_shutdown.connect
    async def _stop_producer(sender: Any, /, *args: Any, signal: Any, **_: Any) -> None:
        # Faust flushes its producer after this signal. A batch cut short by the stop has
        # states ahead of its delivered outputs: not saved, its records come again.
        if idle.is_set():
            checkpoint(unsaved())
        for producer in producers:
            await producer.stop()

    def resume_at(topic: str, partition: int) -> int | None:
        return processor.resume_offset(kinds[topic], partition)

    consume_in_batches(app, source, arbitrate, resume_at)


async def send_all(producer: AIOKafkaProducer, outputs: list[Output],
                   out_names: dict[str, str], ohlcv: str) -> dict[int, int]:
    """Send ``outputs`` and wait for all of them to be delivered; returns, per partition of
    ``ohlcv``, the offset after the last record written there.

    Records with a partition go into one ``BatchBuilder`` per topic-partition (in output order,
    so each partition keeps the order of the outputs) submitted with ``send_batch``: a coroutine
    per batch instead of one per record. Records without a partition (dead letters, rare) go
    through ``send`` and the partitioner. Nothing is awaited per record; all deliveries are
    awaited once at the end, so the caller acks the batch only after every output is written.
    """
    builders: dict[tuple[str, int], Any] = {}
    full: list[tuple[str, int, Any, int]] = []  # (topic, partition, builder, records)
    counts: dict[tuple[str, int], int] = {}
    pending: list[Any] = []
    for logical, key, value, partition, headers in outputs:
        name = out_names.get(logical) or out_names.setdefault(logical, topic_name(logical))
        if partition is None:
            pending.append(await producer.send(name, value, key=key, headers=headers))
            continue
        tp = (name, partition)
        builder = builders.get(tp)
        if builder is None:
            builder = builders[tp] = producer.create_batch()
            counts[tp] = 0
        if builder.append(key=key, value=value, timestamp=None, headers=headers) is None:
            full.append((name, partition, builder, counts[tp]))  # full: start another
            builder = builders[tp] = producer.create_batch()
            counts[tp] = 0
            if builder.append(key=key, value=value, timestamp=None, headers=headers) is None:
                raise ValueError(f"record too large for a batch ({len(value)} bytes)")
        counts[tp] += 1
    full.extend((name, p, b, counts[name, p]) for (name, p), b in builders.items())
    sent: list[tuple[str, int, int]] = []
    for name, p, builder, n in full:
        builder.close()
        pending.append(await producer.send_batch(builder, name, partition=p))
        sent.append((name, p, n))
    delivered = await asyncio.gather(*pending)
    marks: dict[int, int] = {}
    # batch futures come after the per-record ones; a batch's metadata holds its base offset
    for (name, p, n), md in zip(sent, delivered[len(delivered) - len(sent):], strict=True):
        if name == ohlcv:
            marks[p] = max(marks.get(p, 0), md.offset + n)
    for md in delivered[:len(delivered) - len(sent)]:
        if md.topic == ohlcv:
            marks[md.partition] = max(marks.get(md.partition, 0), md.offset + 1)
    return marks


def source_name(logical: str, prefix: str | None) -> str:
    """A raw topic's name under ``prefix`` (None: the usual ``FIML_TOPIC_PREFIX``)."""
    return topic_name(logical) if prefix is None else prefix + TOPICS[logical].name
