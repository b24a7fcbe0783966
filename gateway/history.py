"""Reading a range of a retained topic: the I/O under replay, resume and ``GET /ohlcv``.

Each use opens its own short-lived consumer (no group, manual assignment), separate from the
hub's, so that a long replay never delays live data and closing it frees everything.

Partitions are assigned only to read them, each seeked in the same step. An assigned
partition is fetched at once, from the log's end when it has no position yet, and the broker
answers one connection's requests in order: every offset lookup made while such a fetch
long-polled at the end (``fetch_max_wait_ms``, 500 ms) waited for it. Assigning at open cost
each replay about 3 s before its first record (docs/PERFORMANCE.md, "Replay").
"""

from __future__ import annotations

import asyncio
import heapq
import operator
from collections.abc import AsyncGenerator
from types import TracebackType
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from gateway.errors import RangeReadError

__all__ = ["TopicReader", "time_ordered"]

_TIMESTAMP = operator.attrgetter("timestamp")


def time_ordered(runs: list[list[Any]]) -> list[Any]:
    """One list of the records of ``runs`` (one run per partition, in offset order) in Kafka
    timestamp order, each run's own order kept exactly.

    Each run's timestamps almost always rise (one producer's clock), and then one stable sort
    by timestamp does it: five times cheaper than a key of (timestamp, partition, offset), a
    third of a replay's time before. A run whose timestamps go back (producers with different
    clocks, after a rebalance) is merged instead, so that no partition's records are
    reordered: a resume position counts on it.
    """
    runs = [run for run in runs if run]
    if len(runs) <= 1:
        return runs[0] if runs else []
    if all(_rising(run) for run in runs):
        out = [m for run in runs for m in run]
        out.sort(key=_TIMESTAMP)
        return out
    return list(heapq.merge(*runs, key=_TIMESTAMP))


def _rising(run: list[Any]) -> bool:
    stamps = list(map(_TIMESTAMP, run))
    return all(map(operator.le, stamps, stamps[1:]))


class TopicReader:
    """A short-lived reader of one topic; use as ``async with TopicReader(...) as reader``."""

    def __init__(
        self, bootstrap: str, topic: str, partitions: int, timeout_s: float = 10.0
    ) -> None:
        self._topic = topic
        # The partition count comes from the caller (the hub knows it): a fresh consumer's
        # metadata does not include topics it has not been assigned yet.
        self.partitions = [TopicPartition(topic, p) for p in range(partitions)]
        self._timeout_ms = int(timeout_s * 1000)
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=None,
            enable_auto_commit=False,
            isolation_level="read_committed",
            client_id="fiml-gateway-history",
            request_timeout_ms=max(self._timeout_ms, 5000),
            # aiokafka unpacks a whole fetch in one getmany, without yielding: 64 KiB a
            # partition (about 200 records) keeps that under a few ms of the loop, where the
            # 1 MiB default held live messages for 20-30 ms. The bare read rate is the same.
            max_partition_fetch_bytes=64 * 1024,
        )

    async def __aenter__(self) -> TopicReader:
        """Raises: RangeReadError: the broker cannot be reached or the topic is unknown."""
        if not self.partitions:
            await self._consumer.stop()  # built in __init__: close it (no "Unclosed" warning)
            raise RangeReadError(f"topic {self._topic} has no known partitions")
        try:
            await self._consumer.start()
        except KafkaError as exc:
            await self._consumer.stop()
            raise RangeReadError(f"cannot read {self._topic}: {exc!r}") from exc
        except BaseException:  # cancelled while connecting (the client left): close it too
            await asyncio.shield(self._consumer.stop())
            raise
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._consumer.stop()

    def _assign(self, positions: dict[TopicPartition, int]) -> None:
        """Read exactly these partitions, each from its offset. No await between the two: the
        fetcher must not start a fetch of a partition from anywhere else."""
        self._consumer.assign(list(positions))
        for tp, offset in positions.items():
            self._consumer.seek(tp, offset)

    async def end_offsets(self) -> dict[int, int]:
        """The next offset to be written, per partition."""
        ends = await self._consumer.end_offsets(self.partitions)
        return {tp.partition: off for tp, off in ends.items()}

    async def offsets_at(self, time_ms: int) -> dict[int, int]:
        """Per partition, the first offset whose record timestamp is >= ``time_ms`` (the end
        offset if there is none)."""
        found = await self._consumer.offsets_for_times({tp: time_ms for tp in self.partitions})
        ends = await self.end_offsets()
        return {
            tp.partition: (hit.offset if hit is not None else ends[tp.partition])
            for tp, hit in found.items()
        }

    async def deleted_after(self, time_ms: int) -> dict[int, int]:
        """The partitions that may have lost records stamped at or after ``time_ms``: their
        oldest records were deleted (retention, ``delete_records``) and the first one left is
        stamped later. For each, that first record's Kafka timestamp: the partition is whole
        from there on. Partitions with nothing deleted, or nothing left, are not reported."""
        begins = await self._consumer.beginning_offsets(self.partitions)
        ends = await self._consumer.end_offsets(self.partitions)
        cut = {tp for tp in self.partitions if 0 < begins[tp] < ends[tp]}
        self._assign({tp: begins[tp] for tp in cut})
        first: dict[int, int] = {}
        while cut:
            batches = await self._consumer.getmany(
                *cut, timeout_ms=self._timeout_ms, max_records=len(cut)
            )
            if not batches:
                raise RangeReadError(f"no progress reading {self._topic} within the timeout")
            for tp, messages in batches.items():
                if messages:
                    first[tp.partition] = messages[0].timestamp
                    cut.discard(tp)
        return {p: t for p, t in first.items() if t > time_ms}

    async def read(
        self, starts: dict[int, int], ends: dict[int, int]
    ) -> AsyncGenerator[list[Any], None]:
        """Batches of records with ``starts[p] <= offset < ends[p]``, each batch in timestamp
        order (``time_ordered``: across partitions only approximately, since each batch holds
        what one fetch returned; per-partition order is exact).

        Raises:
            RangeReadError: a start offset was already deleted by retention.
        """
        todo = {
            tp for tp in self.partitions if starts.get(tp.partition, 0) < ends.get(tp.partition, 0)
        }
        if not todo:
            return
        begins = await self._consumer.beginning_offsets(list(todo))
        for tp in todo:
            if starts[tp.partition] < begins[tp]:
                raise RangeReadError(
                    f"{tp.topic}[{tp.partition}] from offset {starts[tp.partition]} was deleted "
                    f"(log starts at {begins[tp]})"
                )
        self._assign({tp: starts[tp.partition] for tp in todo})
        while todo:
            batches = await self._consumer.getmany(*todo, timeout_ms=self._timeout_ms)
            runs: list[list[Any]] = []
            for tp, messages in batches.items():
                end = ends[tp.partition]
                if messages and messages[-1].offset >= end:
                    messages = [m for m in messages if m.offset < end]
                runs.append(messages)
            out = time_ordered(runs)
            for tp in list(todo):
                # Position, not the last record: transaction markers occupy offsets too.
                if await self._consumer.position(tp) >= ends[tp.partition]:
                    todo.discard(tp)
            if not batches and todo:
                raise RangeReadError(f"no progress reading {self._topic} within the timeout")
            if out:
                yield out
