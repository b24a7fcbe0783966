"""Exactly one final candle per window across a crash: the fence read back from ``fiml.ohlcv``.

The worker delivers a batch's outputs before it writes the batch's state to the changelog, so a
SIGKILL between the two leaves finals on ``fiml.ohlcv`` that the recovered state does not know
it has emitted; replaying the batch would emit them again. Before it processes a partition for
the first time, the worker therefore reads the partition's ``fiml.ohlcv`` records from the
offset saved with the last state (the partition's *mark*, written after the states of a batch)
to the end, and hands the processor the last final window per (symbol, interval) found there.
The processor then suppresses any final at or before it: replay is deterministic, so a
suppressed final is byte-for-byte the one already on the topic.
"""

from __future__ import annotations

import logging

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

__all__ = ["MARK_PREFIX", "Fence", "add_final", "mark_key", "read_fence"]

log = logging.getLogger(__name__)

#: Table keys of partition marks start with a NUL byte, which no symbol does.
MARK_PREFIX = b"\x00mark:"

#: (symbol, interval) -> window_start_ms of the last final seen on the topic.
Fence = dict[tuple[str, str], int]


def add_final(fence: Fence, value: bytes | None) -> bool:
    """Fold one ``fiml.ohlcv`` record into ``fence`` if it is a final; False if it is not a
    candle record at all (any other producer's bytes): skipped, never a reason to stop the
    worker's assignment (pure)."""
    if value is None or b'"is_final":true' not in value:
        return True
    try:
        c = orjson.loads(value)
        key, start = (c["symbol"], c["interval"]), c["window_start_ms"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return False
    if not (isinstance(key[0], str) and isinstance(key[1], str) and type(start) is int):
        return False
    fence[key] = max(fence.get(key, -1), start)
    return True


def mark_key(partition: int) -> bytes:
    return MARK_PREFIX + str(partition).encode()


async def read_fence(bootstrap: str, topic: str, partition: int, start: int,
                     timeout_s: float = 60.0) -> Fence:
    """The last final window per (symbol, interval) in ``topic[partition]`` from ``start``.

    Raises:
        asyncio.TimeoutError: the end offset was not reached within ``timeout_s``.
        KafkaError: (aiokafka) the broker cannot be reached.
    """
    import asyncio

    fence: Fence = {}
    tp = TopicPartition(topic, partition)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign([tp])
        end = (await consumer.end_offsets([tp]))[tp]
        if end <= start:
            return fence
        consumer.seek(tp, start)

        async def drain() -> None:
            while await consumer.position(tp) < end:
                for records in (await consumer.getmany(tp, timeout_ms=500)).values():
                    for r in records:
                        if not add_final(fence, r.value):
                            log.warning("fence: skipping %s[%d]@%d: not a candle record",
                                        topic, partition, r.offset)

        await asyncio.wait_for(drain(), timeout_s)
    finally:
        await consumer.stop()
    return fence
