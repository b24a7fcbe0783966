"""The arbitration step of the worker: Faust for group membership and partitions; whole fetched
batches for speed; Kafka transactions for exactly once.

Per batch (one consumer fetch, ``batches.py``): every record goes through the ``Processor`` in
its partition's order; each partition's outputs go into that partition's open transaction
(``transactions.py``). About every ``commit_ms`` each changed partition's mark (its symbol
states, watermark and the offset it ends at) and its consumer offset join the transaction and
it is committed. Readers on ``read_committed`` see a partition's outputs when its state and
position are saved with them, never before and never twice. When a partition is assigned, its
writer takes the transactional id over (aborting and fencing any previous owner) and its mark
is read back; the worker resumes after it.

A worker whose producer is fenced (another worker took the partition over while this one was
stopped, or a stopped worker woke up still believing in an old assignment and took it back)
lets that partition go until its next assignment: it writes nothing more for it, and the
group's next rebalance decides who owns it. Faust never commits the raw topics' offsets here (no
record is acked to it); the transactions do.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
from collections.abc import Iterable
from typing import Any

import faust
from aiokafka import TopicPartition
from faust.types import TP, Message

from agents.arbitration.batches import consume_in_batches
from agents.arbitration.core.processor import RAW, Processor
from agents.arbitration.metrics import WorkerCounters, readings
from agents.arbitration.settings import ArbitrationSettings
from agents.arbitration.transactions import (
    FENCED,
    PartitionWriter,
    marks_topic_configs,
    quiet_fenced_leftovers,
    read_mark,
)
from agents.metrics import serve
from infra.topics import ensure_topic
from schemas.topics import TOPICS, topic_name

__all__ = ["attach", "marks_topic", "source_name"]

log = logging.getLogger("fiml.arbitration")


def marks_topic(app_id: str) -> str:
    """The compacted topic of a worker group's partition marks (one per app id)."""
    return f"{app_id}-marks"


def attach(
    app: faust.App, bootstrap: str, settings: ArbitrationSettings, source_prefix: str | None = None
) -> None:
    """Declare the agent on ``app``. The raw topic is read under ``source_prefix`` when given
    (``fiml rebuild``), else under ``FIML_TOPIC_PREFIX``."""
    raw = source_name(RAW, source_prefix)
    app_id = str(app.conf.id)
    marks = marks_topic(app_id)
    source = app.topic(
        raw, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
    )
    processor = Processor(settings)
    writers: dict[int, PartitionWriter] = {}  # owned partition -> its transactional writer
    seen: dict[int, int] = {}  # partition -> last offset taken
    saved_at: dict[int, float] = {}  # partition -> time.monotonic() of its last commit
    # One batch or commit at a time: a commit must not run while a batch sends into the same
    # transaction, nor a rebalance take partitions away in the middle of either.
    busy = asyncio.Lock()
    torn: set[int] = set()  # partitions whose last batch was cut short: never commit them
    lost: set[int] = set()  # fenced since the last assignment: nothing is written for them
    counters = WorkerCounters()
    marks_ready: list[bool] = []

    async def own(partition: int) -> None:
        """Take ``partition`` over: its writer first (which aborts and fences a previous
        owner's open transaction), then its last committed mark."""
        if partition in writers:
            return
        if not marks_ready:  # the first partition: once per worker, on its loop
            quiet_fenced_leftovers(asyncio.get_running_loop())
            await ensure_topic(bootstrap, marks, TOPICS[RAW].partitions, marks_topic_configs())
            marks_ready.append(True)
        writer = PartitionWriter(
            bootstrap, app_id, partition, transaction_timeout_ms=settings.transaction_timeout_ms
        )
        await writer.start()
        try:
            mark = await read_mark(bootstrap, marks, partition)
            try:
                processor.restore(partition, mark)
            except (ValueError, TypeError, KeyError) as exc:
                why = (
                    f"the saved state of raw partition {partition} ({marks}) cannot be read by "
                    f"this version ({type(exc).__name__}: {exc}); start from empty state with "
                    "`fiml up --fresh`, or delete the marks topic and rebuild with `fiml rebuild`"
                )
                log.error("%s", why)
                raise ValueError(why) from exc
        except BaseException:
            await writer.stop()
            raise
        writers[partition] = writer
        torn.discard(partition)
        log.info(
            "partition %d: resumed at offset %s", partition, processor.resume_offset(partition) or 0
        )

    async def let_go(partitions: Iterable[int], quiet: bool = False) -> None:
        """Drop what this worker holds of ``partitions``; ``quiet``: a producer that fails to
        close (a fenced one may) is gone either way."""
        for p in sorted(partitions):
            writer = writers.pop(p, None)
            if writer is not None:
                try:
                    await writer.stop()
                except Exception:
                    if not quiet:
                        raise
                    log.debug("closing the fenced producer of partition %d", p, exc_info=True)
            saved_at.pop(p, None)
            seen.pop(p, None)
        processor.forget(partitions)

    async def fenced(partition: int, exc: Exception) -> None:
        log.warning(
            "partition %d: another worker owns it now (%s); letting it go until the "
            "next assignment",
            partition,
            type(exc).__name__,
        )
        lost.add(partition)
        await let_go((partition,), quiet=True)

    def due(now: float) -> set[int]:
        """Owned partitions whose last commit is ``commit_ms`` old (``commit`` skips those
        with nothing to commit)."""
        every = settings.commit_ms / 1000
        return {p for p in writers if now - saved_at.get(p, -math.inf) >= every}

    async def commit(partitions: Iterable[int]) -> None:
        """Commit each partition's outputs, mark and offset in one transaction; a partition
        with no new state and no open transaction has nothing to commit (its offset went in
        with its mark)."""
        now = time.monotonic()
        for p in sorted(partitions):
            writer = writers.get(p)
            if writer is None or p in torn:
                continue
            if p not in processor.marks and not writer.in_transaction:
                continue
            mark = processor.mark(p) if p in processor.marks else None
            resume = processor.resume_offset(p)
            offsets = {TopicPartition(raw, p): resume} if resume is not None else {}
            try:
                await writer.commit(marks, mark, offsets, app_id)
            except FENCED as exc:
                await fenced(p, exc)
                continue
            saved_at[p] = now

    async def _commit_when_quiet() -> None:
        # after the last batch of a burst, nothing else would commit it
        if not busy.locked():
            async with busy:
                await commit(due(time.monotonic()))

    app.timer(interval=settings.commit_ms / 1000)(_commit_when_quiet)

    @app.on_partitions_revoked.connect
    async def _revoked(sender: Any, /, *args: Any, signal: Any, **_: Any) -> None:
        revoked = {tp.partition for tp in args[0] if tp.topic == raw}
        async with busy:  # the running batch finishes first, so its states are whole
            await commit(revoked)
            await let_go(revoked)
            lost.difference_update(revoked)

    @app.on_partitions_assigned.connect
    async def _assigned(sender: Any, /, *args: Any, signal: Any, **_: Any) -> None:
        mine = sorted({tp.partition for tp in args[0] if tp.topic == raw})
        log.info("raw partitions assigned: %s", ", ".join(map(str, mine)) or "none")
        async with busy:
            lost.clear()  # the group's assignment decides again
            for p in mine:
                await own(p)

    def lag() -> dict[int, int]:
        out: dict[int, int] = {}
        for partition, last in list(seen.items()):
            high = app.consumer.highwater(TP(raw, partition))
            if high is not None:
                out[partition] = max(0, high - last - 1)
        return out

    def checkpoint_age_s() -> dict[int, float]:
        now = time.monotonic()
        return {p: now - at for p, at in list(saved_at.items())}

    port = os.environ.get("FIML_ARB_METRICS_PORT")
    if port:
        serve(int(port), lambda: readings(processor, counters, lag, checkpoint_age_s))

    async def arbitrate(messages: list[Message]) -> None:
        async with busy:
            by_partition: dict[int, list[Message]] = {}
            for m in messages:
                by_partition.setdefault(m.partition, []).append(m)
            mine = {tp.partition for tp in app.consumer.assignment() if tp.topic == raw}
            for p, records in sorted(by_partition.items()):
                if p in lost or p not in mine:
                    # fenced, or fetched just before a revocation: the records are another
                    # owner's now, and taking the partition back would fence that owner
                    del by_partition[p]
                    continue
                await own(p)
                expected = processor.resume_offset(p)
                if expected is not None and records[0].offset > expected:
                    # fetched past the saved state (a fetch that raced the assignment): go back
                    log.info(
                        "%s[%d]: fetched from offset %d, the state ends before %d: "
                        "going back there",
                        raw,
                        p,
                        records[0].offset,
                        expected,
                    )
                    await app.consumer.seek(TP(raw, p), expected)
                    del by_partition[p]
            counters.batches += 1
            torn.update(by_partition)  # until every output of the batch is in its transaction
            for p, records in by_partition.items():
                counters.records_in[RAW] = counters.records_in.get(RAW, 0) + len(records)
                for m in records:
                    # a tombstone (no value) is malformed here: it goes to the dead letters
                    processor.process(m.key, m.value or b"", p, m.offset)
                seen[p] = records[-1].offset
            for p, outputs in sorted(processor.drain_partitions().items()):
                # Another error here (a broker gone past the retries) stops the worker: the
                # transaction is never committed and the next owner aborts it.
                try:
                    await writers[p].send(outputs)
                except FENCED as exc:
                    await fenced(p, exc)
                    continue
                for out in outputs:
                    counters.records_out[out[0]] = counters.records_out.get(out[0], 0) + 1
            torn.difference_update(by_partition)
            await commit(due(time.monotonic()))
            if processor.poison:
                log.warning("%d poison record(s) sent to the dead-letter topic", processor.poison)
                counters.dead_letters += processor.poison
                processor.poison = 0

    @app.on_before_shutdown.connect
    async def _stop_writers(sender: Any, /, *args: Any, signal: Any, **_: Any) -> None:
        # A batch cut short by the stop (``torn``) has states ahead of its outputs: its
        # transaction is not committed, and its records come again.
        if not busy.locked():
            async with busy:
                await commit(set(writers))
        await let_go(set(writers))

    def resume_at(topic: str, partition: int) -> int | None:
        return processor.resume_offset(partition) if partition in writers else None

    consume_in_batches(app, source, arbitrate, resume_at)


def source_name(logical: str, prefix: str | None) -> str:
    """A raw topic's name under ``prefix`` (None: the usual ``FIML_TOPIC_PREFIX``)."""
    return topic_name(logical) if prefix is None else prefix + TOPICS[logical].name
