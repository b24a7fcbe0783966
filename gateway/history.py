"""Reading a range of a retained topic: the I/O under replay, resume and ``GET /ohlcv``.

Each use opens its own short-lived consumer (no group, manual assignment), separate from the
hub's, so that a long replay never delays live data and closing it frees everything.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from gateway.errors import RangeReadError

__all__ = ["TopicReader"]


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
        self._consumer.assign(self.partitions)
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._consumer.stop()

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
        for tp in cut:
            self._consumer.seek(tp, begins[tp])
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

    async def read(self, starts: dict[int, int], ends: dict[int, int]) -> AsyncIterator[list[Any]]:
        """Batches of records with ``starts[p] <= offset < ends[p]``, each batch in timestamp
        order (across partitions only approximately: per-partition order is exact).

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
            self._consumer.seek(tp, starts[tp.partition])
        while todo:
            batches = await self._consumer.getmany(*todo, timeout_ms=self._timeout_ms)
            out: list[Any] = []
            for tp, messages in batches.items():
                end = ends[tp.partition]
                out.extend(m for m in messages if m.offset < end)
            for tp in list(todo):
                # Position, not the last record: transaction markers occupy offsets too.
                if await self._consumer.position(tp) >= ends[tp.partition]:
                    todo.discard(tp)
            if not batches and todo:
                raise RangeReadError(f"no progress reading {self._topic} within the timeout")
            if out:
                out.sort(key=lambda m: (m.timestamp, m.partition, m.offset))
                yield out
