"""The arbitration agent: Faust for partitions, the state table and recovery; batches for speed.

Per batch (``stream.take_events``): every record goes through the ``Processor``; the outputs go
out through a plain aiokafka producer and their delivery is awaited; then each changed symbol's
state is written to the table once, and last the partition's mark (the ``fiml.ohlcv`` offset
after the batch), which the fence of a restarted worker starts from (``fence.py``). ``take_events`` acks the batch only when the loop body
returns, and Faust flushes its producer (the changelog) before it commits offsets, so an offset
is never committed ahead of the outputs and the state it produced.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

import faust
import orjson
from aiokafka import AIOKafkaProducer

from agents.arbitration.fence import MARK_PREFIX, mark_key, read_fence
from agents.arbitration.processor import TICKS, TRADES, Processor
from agents.arbitration.settings import ArbitrationSettings
from schemas.topics import topic_name

__all__ = ["STATE_TABLE", "attach"]

STATE_TABLE = "arbitration-state"
log = logging.getLogger("fiml.arbitration")


def attach(app: faust.App, bootstrap: str, settings: ArbitrationSettings) -> None:
    """Declare the state table and the agent on ``app``."""
    kinds = {topic_name(TICKS): TICKS, topic_name(TRADES): TRADES}
    out_names: dict[str, str] = {}
    raw: faust.Schema[bytes, bytes] = faust.Schema(
        key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
    table = app.Table(STATE_TABLE, schema=raw, partitions=app.conf.topic_partitions)
    source = app.topic(*kinds, key_type=bytes, value_type=bytes, key_serializer="raw",
                       value_serializer="raw")

    def scan(partition: int) -> Iterable[bytes]:
        # Only this worker's partitions are recovered into the table; the stored partition
        # number (first element of each saved state) picks the partition's symbols.
        return [v for k, v in table.data.items()
                if not k.startswith(MARK_PREFIX) and _partition_of(v) == partition]

    def load(symbol: str) -> bytes | None:
        value: bytes | None = table.data.get(symbol.encode())
        return value

    processor = Processor(settings, load, scan)
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
                await fence({e.message.partition for e in events})
                for event in events:
                    m = event.message
                    processor.process(kinds[m.topic], m.key, m.value, m.partition, m.offset)
                outputs, states = processor.drain()
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
                for symbol, (partition, data) in states.items():
                    key = symbol.encode()
                    # The table's public store and changelog, with the partition given: the
                    # source partition, so the table stays co-partitioned with the raw topics.
                    table.data[key] = data
                    table.send_changelog(partition, key, data)
                # Marks last: one changelog partition keeps the order, so a mark that survived
                # a crash means the batch's states did too.
                for partition, offset in marks.items():
                    key, data = mark_key(partition), orjson.dumps([1, offset])
                    table.data[key] = data
                    table.send_changelog(partition, key, data)
                if processor.poison:
                    log.warning("%d poison record(s) sent to the dead-letter topic",
                                processor.poison)
                    processor.poison = 0
        finally:
            await producer.stop()


def _partition_of(state: bytes) -> int:
    # SymbolState.to_bytes starts [1,"symbol","asset",partition,...]; decoding the whole state
    # only to filter runs once per partition assignment, so it is cheap enough.
    return int(orjson.loads(state)[3])
