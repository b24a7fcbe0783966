"""The arbitration agent: Faust for partitions, the state table and recovery; batches for speed.

Per batch (``stream.take_events``): every record goes through the ``Processor``; the outputs go
out through a plain aiokafka producer and their delivery is awaited; then each changed symbol's
state is written to the table once, and last the partition's mark (the ``fiml.ohlcv`` offset
after the batch), which the fence of a restarted worker starts from (``fence.py``).
``take_events`` acks the batch only when the loop body
returns, and Faust flushes its producer (the changelog) before it commits offsets, so an offset
is never committed ahead of the outputs and the state it produced.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import Any

import faust
import orjson
from aiokafka import AIOKafkaProducer
from faust.types import TP

from agents.arbitration.fence import mark_key, read_fence
from agents.arbitration.processor import TICKS, TRADES, Processor
from agents.arbitration.settings import ArbitrationSettings
from schemas.topics import TOPICS, topic_name

__all__ = ["STATE_TABLE", "attach", "source_name"]

STATE_TABLE = "arbitration-state"
log = logging.getLogger("fiml.arbitration")


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
                      partitions=app.conf.topic_partitions)
    source = app.topic(*kinds, key_type=bytes, value_type=bytes, key_serializer="raw",
                       value_serializer="raw")

    def scan(partition: int) -> Iterable[bytes]:
        return ()  # every state of a partition is in its mark

    def load(symbol: str) -> bytes | None:
        return None  # a symbol not in its partition's mark is new

    def load_mark(partition: int) -> bytes | None:
        value: bytes | None = table.data.get(mark_key(partition))
        return value

    processor = Processor(settings, load, scan, load_mark)
    seen: dict[tuple[str, int], int] = {}  # (topic, partition) -> last offset taken

    def caught_up_in(partition: int) -> Callable[[str], bool]:
        def caught_up(kind: str) -> bool:
            topic = names[kind]
            high = app.consumer.highwater(TP(topic, partition))
            return high is not None and seen.get((topic, partition), -1) + 1 >= high
        return caught_up

    fenced: set[int] = set()
    ohlcv = topic_name("fiml.ohlcv")

    @app.on_partitions_revoked.connect
    async def _forget(sender: Any, /, *args: Any, signal: Any, **_: Any) -> None:
        revoked = {tp.partition for tp in args[0]}
        processor.forget(revoked)
        fenced.difference_update(revoked)

    async def fence(partitions: set[int]) -> None:
        for p in sorted(partitions - fenced):
            mark = table.data.get(mark_key(p))
            start = int(orjson.loads(mark)[1]) if mark else 0
            found = await read_fence(bootstrap, ohlcv, p, start)
            processor.set_fence(p, found)
            fenced.add(p)
            log.info("partition %d: fence from %s offset %d: %d series", p, ohlcv, start,
                     len(found))

    @app.agent(source, name="arbitrate")
    async def arbitrate(stream: faust.StreamT[bytes]) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all",
                                    enable_idempotence=True, linger_ms=5)
        await producer.start()
        try:
            # take_events is public Faust API missing from its StreamT type
            batches = stream.take_events(  # type: ignore[attr-defined]
                settings.batch_max, settings.batch_within_s)
            async for events in batches:
                partitions = {e.message.partition for e in events}
                await fence(partitions)
                for event in events:
                    m = event.message
                    processor.admit(kinds[m.topic], m.key, m.value, m.partition, m.offset)
                    seen[m.topic, m.partition] = m.offset
                for p in sorted(partitions):
                    processor.release(p, caught_up_in(p))
                outputs, _states = processor.drain()  # the states go in the marks
                pending = []
                for logical, key, value, partition, headers in outputs:
                    name = out_names.get(logical) or out_names.setdefault(
                        logical, topic_name(logical))
                    pending.append(await producer.send(name, value, key=key,
                                                       partition=partition, headers=headers))
                # Delivery before the batch is acked: an error here crashes the agent and the
                # batch is processed again (at least once).
                delivered = await asyncio.gather(*pending)
                marks: dict[int, int] = {}
                for md in delivered:
                    if md.topic == ohlcv:
                        marks[md.partition] = max(marks.get(md.partition, 0), md.offset + 1)
                # One record per touched partition, holding its marks, merge queues and every
                # symbol state (so a batch's state is saved whole or not at all), through the
                # table's public store and changelog with the source partition given, so the
                # table stays co-partitioned with the raw topics.
                for partition in sorted(processor.marks | marks.keys()):
                    key, data = mark_key(partition), processor.mark(partition, marks.get(partition))
                    table.data[key] = data
                    table.send_changelog(partition, key, data)
                processor.marks.clear()
                if processor.poison:
                    log.warning("%d poison record(s) sent to the dead-letter topic",
                                processor.poison)
                    processor.poison = 0
        finally:
            await producer.stop()


def source_name(logical: str, prefix: str | None) -> str:
    """A raw topic's name under ``prefix`` (None: the usual ``FIML_TOPIC_PREFIX``)."""
    return topic_name(logical) if prefix is None else prefix + TOPICS[logical].name
