"""``fiml replay``: a time range of a topic streamed to a file (JSON Lines, CSV, Parquet).

The range is read once, in chunks, and never held whole: memory stays at a few chunks
(``CHUNK_RECORDS`` records each: one being read, up to ``WRITE_AHEAD`` waiting, one being
written) whatever the range's length. Each chunk is converted and written in a writer thread
while the next are read, so that Arrow's C++ (which releases the GIL) runs beside the Kafka
client on the other core.

Order: within a partition, exactly the partition's order. Across partitions, approximately
time order: the records of each fetch (what one ``getmany`` returns, up to about a megabyte
per partition) are merged by timestamp (``time_ordered``), as the gateway's replay does, but
a later fetch can hold records stamped before the end of an earlier one. Sort by
``timestamp_ms`` (``--meta``) or ``event_time_ms`` where the exact order across partitions
matters. Only committed records are read (``read_committed``): aborted transactions'
records never appear.

The conversions themselves are in ``infra.export_formats`` (pure).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import accumulate
from operator import attrgetter
from typing import Any, BinaryIO, Literal, Protocol, TypeVar, cast

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from pydantic import BaseModel

from infra.errors import BrokerUnreachableError, InfraError
from infra.export_formats import (
    META_FIELDS,
    conform,
    csv_ready,
    csv_schema,
    fitting_only,
    jsonl_block,
    meta_line,
    model_schema,
    objects_only,
    parse_lines,
    parse_records,
    settled,
    with_meta,
)

__all__ = [
    "CHUNK_RECORDS",
    "FORMATS",
    "Chunk",
    "ExportResult",
    "Format",
    "MixedRecordsError",
    "Sink",
    "TopicMissingError",
    "export_range",
    "sink_for",
    "time_ordered",
    "topic_models",
]

Format = Literal["jsonl", "csv", "parquet"]
FORMATS: tuple[Format, ...] = ("jsonl", "csv", "parquet")

#: Records per chunk, one Arrow parse. Large enough that the per-chunk calls cost nothing per
#: record, small enough that the last chunk, converted after the reading ends, adds little.
CHUNK_RECORDS = 16_384

#: Chunks read ahead of the one being written: the reader does not wait for a slow write
#: unless this many are queued (memory: about (2 + WRITE_AHEAD) chunks, 8 MB each at most).
WRITE_AHEAD = 2

#: Rows of a Parquet row group: several chunks (readers prefer large groups).
ROW_GROUP_ROWS = 65_536

#: How long the reader waits for a partition that has records left to make progress.
_STALL_S = 10.0

#: Progress callback: records read so far (the symbol filter's rejects included), and the
#: range's upper bound (offsets, which count transaction markers too).
Progress = Callable[[int, int], None]


class TopicMissingError(InfraError):
    """The topic does not exist on the broker."""


class MixedRecordsError(InfraError):
    """A topic outside the registry whose records do not share one shape: no table for them."""


class _Stamped(Protocol):
    @property
    def timestamp(self) -> int: ...


R = TypeVar("R", bound=_Stamped)

_TIMESTAMP = attrgetter("timestamp")


def time_ordered(runs: Sequence[Sequence[R]]) -> list[R]:
    """The records of several partitions' runs (each in offset order) in one list, in
    approximately timestamp order, each run's own order kept exactly.

    Each record is keyed by the largest timestamp of its run up to it, so keys never decrease
    within a run and the (stable) sort cannot reorder one, even where a producer stamped its
    records out of order; equal keys keep the runs' order (give them by partition).
    """
    if len(runs) == 1:
        return list(runs[0])
    keys: list[int] = []
    items: list[R] = []
    for run in runs:
        keys.extend(accumulate(map(_TIMESTAMP, run), max))
        items.extend(run)
    order = sorted(range(len(items)), key=keys.__getitem__)
    return [items[i] for i in order]


@dataclass(slots=True)
class Chunk:
    """Records in the order they are written; the meta lists only with ``--meta``."""

    values: list[bytes | None]
    partitions: list[int] | None = None
    offsets: list[int] | None = None
    timestamps: list[int] | None = None

    def meta_of(self, kept: Sequence[int] | None) -> tuple[list[int], list[int], list[int]]:
        """The meta lists, of the records at ``kept`` only (all if None)."""
        p, o, t = self.partitions, self.offsets, self.timestamps
        assert p is not None and o is not None and t is not None
        if kept is None:
            return p, o, t
        return [p[i] for i in kept], [o[i] for i in kept], [t[i] for i in kept]

    def split(self, n: int) -> tuple[Chunk, Chunk]:
        """The first ``n`` records, and the rest."""
        v, p, o, t = self.values, self.partitions, self.offsets, self.timestamps
        if p is None or o is None or t is None:
            return Chunk(v[:n]), Chunk(v[n:])
        return Chunk(v[:n], p[:n], o[:n], t[:n]), Chunk(v[n:], p[n:], o[n:], t[n:])


@dataclass(slots=True)
class ExportResult:
    """What an export wrote: records, records left out and why, keys left out."""

    written: int = 0
    not_json: int = 0  # not JSON at all, or no value (a tombstone)
    unfit: int = 0  # did not fit the columns (CSV, Parquet of a topic outside the registry)
    extra_keys: set[str] = field(default_factory=set)


def topic_models(logical: str) -> tuple[type[BaseModel], ...]:
    """The record models of a registry topic (by logical name), none for other topics."""
    from schemas.codec import RECORD_TYPES
    from schemas.records import RawTick, RawTrade

    if logical == "fiml.raw":
        return (RawTick, RawTrade)
    model = RECORD_TYPES.get(logical)
    return (model,) if model is not None else ()


# ---------------------------------------------------------------------------------- sinks


class _JsonlSink:
    def __init__(self, out: BinaryIO, trusted: bool, result: ExportResult) -> None:
        self._out, self._trusted, self._result = out, trusted, result

    def prepare(self) -> None:
        pass

    def write(self, chunk: Chunk) -> None:
        block = jsonl_block(chunk.values) if self._trusted else None
        if block is not None:  # each value a one-line JSON object: written as it is
            kept, lines = None, cast(list[bytes], chunk.values)
        else:
            kept, lines = objects_only(chunk.values)
            self._result.not_json += len(chunk.values) - len(lines)
        if chunk.partitions is not None:
            lines = list(map(meta_line, lines, *chunk.meta_of(kept)))
            block = None
        if lines:
            self._out.write(block if block is not None else b"\n".join(lines))
            self._out.write(b"\n")
        self._result.written += len(lines)

    def close(self) -> None:
        self._out.flush()


class _TableSink:
    """CSV or Parquet: chunks parsed by Arrow against one schema, written as they come."""

    def __init__(
        self,
        fmt: Format,
        out: BinaryIO,
        models: tuple[type[BaseModel], ...],
        meta: bool,
        result: ExportResult,
    ) -> None:
        self._fmt, self._out, self._meta, self._result = fmt, out, meta, result
        self._trusted = bool(models)
        self._schema: pa.Schema | None = model_schema(*models) if models else None
        self._writer: Any = None
        self._held: list[pa.Table] = []  # Parquet: chunks not yet in a row group
        # After a chunk failed, the chunks behind it are not written: a file with a hole in
        # it would look whole.
        self._failed = False

    def prepare(self) -> None:
        """Pay Arrow's first-call costs (about 0.15 s for the CSV list kernels, here)
        while the reader connects, not on the first chunk."""
        if self._fmt == "csv":
            csv_ready(pa.table({"warm": pa.array([["a"]], pa.list_(pa.string()))}))

    def write(self, chunk: Chunk) -> None:
        if self._failed:
            return
        try:
            self._write_chunk(chunk)
        except BaseException:
            self._failed = True
            raise

    def _write_chunk(self, chunk: Chunk) -> None:
        table, kept = self._parse(chunk.values)
        if table.num_rows == 0:
            return
        if self._schema is None:
            self._schema = settled(table.schema)
        table, extra = conform(table, self._schema)
        self._result.extra_keys.update(extra)
        if chunk.partitions is not None:
            table = with_meta(table, *chunk.meta_of(kept))
        self._write(table)
        self._result.written += table.num_rows

    def _parse(self, values: list[bytes | None]) -> tuple[pa.Table, list[int] | None]:
        """The chunk as a table, and which of its records it holds (None: all)."""
        table = parse_records(values, self._schema) if self._trusted else None
        if table is not None:
            return table, None
        kept, lines = objects_only(values)
        self._result.not_json += len(values) - len(kept)
        if not lines:
            return pa.table({}), kept
        try:
            return parse_lines(b"\n".join(lines), self._schema), kept
        except pa.ArrowInvalid as exc:
            if self._schema is None:
                raise MixedRecordsError(
                    f"the records do not share one shape, so they make no table ({exc}): "
                    "export this topic as jsonl"
                ) from None
        fit = fitting_only(lines, self._schema)
        self._result.unfit += len(lines) - len(fit)
        if not fit:
            return pa.table({}), []
        return parse_lines(b"\n".join(lines[i] for i in fit), self._schema), [kept[i] for i in fit]

    def _write(self, table: pa.Table) -> None:
        if self._writer is None:
            self._writer = self._open(table.schema)
        if self._fmt == "csv":
            self._writer.write_table(csv_ready(table))
            return
        self._held.append(table)
        if sum(t.num_rows for t in self._held) >= ROW_GROUP_ROWS:
            self._flush()

    def _flush(self) -> None:
        """The Parquet tables held, as one row group."""
        if self._held:
            table = pa.concat_tables(self._held)
            self._held.clear()
            self._writer.write_table(table, row_group_size=table.num_rows)

    def _open(self, schema: pa.Schema) -> Any:
        if self._fmt == "csv":
            return pa_csv.CSVWriter(self._out, csv_schema(schema))
        # zstd: about a third of snappy's size for these records, and as fast to write here
        return pq.ParquetWriter(self._out, schema, compression="zstd")

    def close(self) -> None:
        if self._writer is None:  # no record: still a valid file, with the columns if known
            schema = self._schema or pa.schema([])
            if self._meta:
                schema = pa.schema([*META_FIELDS, *schema])
            self._writer = self._open(schema)
        self._flush()
        self._writer.close()
        self._out.flush()


class Sink(Protocol):
    """Where chunks go: ``prepare``, ``write`` each, then ``close`` (in a writer thread, one
    call at a time)."""

    def prepare(self) -> None: ...

    def write(self, chunk: Chunk) -> None: ...

    def close(self) -> None: ...


def sink_for(
    fmt: Format,
    out: BinaryIO,
    models: tuple[type[BaseModel], ...],
    meta: bool,
    result: ExportResult,
) -> Sink:
    """The writer of ``fmt`` to ``out``; it counts what it writes and leaves out in
    ``result``. ``models`` as for ``export_range``; ``meta``: chunks carry the meta lists."""
    if fmt == "jsonl":
        return _JsonlSink(out, bool(models), result)
    return _TableSink(fmt, out, models, meta, result)


# --------------------------------------------------------------------------------- reading


async def _chunks(
    consumer: Any,
    begins: dict[Any, int],
    stops: dict[Any, int],
    symbols: frozenset[bytes],
    meta: bool,
    chunk_records: int,
    progress: Progress | None,
) -> AsyncIterator[Chunk]:
    """The records at ``begins[tp] <= offset < stops[tp]`` in chunks of ``chunk_records``
    (the last one fewer), each fetch merged into time order."""
    total = sum(stops[tp] - begins[tp] for tp in begins)
    for tp, begin in begins.items():
        consumer.seek(tp, begin)
    todo = sorted(begins, key=attrgetter("partition"))
    read = 0
    chunk = Chunk([], [], [], []) if meta else Chunk([])
    stalled_since = time.monotonic()
    while todo:
        batches = await consumer.getmany(*todo, timeout_ms=200)
        runs = []
        for tp in todo:
            messages = batches.get(tp)
            if not messages:
                continue
            read += len(messages)
            stop = stops[tp]
            if messages[-1].offset >= stop:
                messages = [m for m in messages if m.offset < stop]
            if symbols:
                messages = [m for m in messages if m.key in symbols]
            runs.append(messages)
        ordered = time_ordered(runs) if runs else []
        chunk.values.extend([m.value for m in ordered])
        if meta:
            assert chunk.partitions is not None and chunk.offsets is not None
            assert chunk.timestamps is not None
            chunk.partitions.extend([m.partition for m in ordered])
            chunk.offsets.extend([m.offset for m in ordered])
            chunk.timestamps.extend([m.timestamp for m in ordered])
        # Position, not the last record: transaction markers and aborted records occupy
        # offsets too, and the last of them may come in a fetch that returns no record.
        left = [tp for tp in todo if await consumer.position(tp) < stops[tp]]
        if len(left) < len(todo):
            consumer.pause(*(tp for tp in todo if tp not in left))  # no fetching past the end
            stalled_since = time.monotonic()
        elif batches:
            stalled_since = time.monotonic()
        elif time.monotonic() - stalled_since > _STALL_S:
            raise InfraError(f"no progress reading {todo[0].topic} for {_STALL_S:.0f} s")
        todo = left
        if progress is not None:
            progress(total if not todo else min(read, total), total)
        while len(chunk.values) >= chunk_records:  # exactly chunk_records: one fetch may be more
            head, chunk = chunk.split(chunk_records)
            yield head
        if not todo and chunk.values:
            yield chunk


async def _range_offsets(
    consumer: Any, parts: list[Any], start_ms: int, end_ms: int | None
) -> tuple[dict[Any, int], dict[Any, int]]:
    """Per partition, the first offset stamped at or after ``start_ms`` and the first at or
    after ``end_ms`` (the end of the committed log without ``end_ms`` or such a record);
    partitions with nothing in between are left out.

    Kafka's lookup counts transaction markers, which the broker stamps with its own clock when
    a transaction ends. FIML's producers stamp records with the clock at send time, so a
    marker follows its records; a transactional producer that stamps records in the past
    would put markers stamped "now" among them, and a range could end (or start) early.
    """
    ends = await consumer.end_offsets(parts)
    found = await consumer.offsets_for_times({tp: start_ms for tp in parts})
    stops = dict(ends)
    if end_ms is not None:
        at_end = await consumer.offsets_for_times({tp: end_ms for tp in parts})
        stops = {tp: (hit.offset if hit else ends[tp]) for tp, hit in at_end.items()}
    begins = {tp: (hit.offset if hit is not None else ends[tp]) for tp, hit in found.items()}
    return {tp: b for tp, b in begins.items() if b < stops[tp]}, stops


async def export_range(
    bootstrap: str,
    topic: str,
    start_ms: int,
    end_ms: int | None,
    out: BinaryIO,
    fmt: Format = "jsonl",
    *,
    models: tuple[type[BaseModel], ...] = (),
    symbols: frozenset[str] = frozenset(),
    meta: bool = False,
    chunk_records: int = CHUNK_RECORDS,
    progress: Progress | None = None,
) -> ExportResult:
    """Write the records of ``topic`` stamped in ``[start_ms, end_ms)`` to ``out``.

    ``models``: the topic's record models (``topic_models``): its CSV and Parquet columns, and
    the license to write its values to JSON Lines as they are. Without them every value is
    checked with orjson and the columns are the first chunk's (a key first seen later is
    left out and named in the result). ``symbols`` filters on the Kafka key (the canonical
    symbol); ``meta`` adds the partition, offset and Kafka timestamp of each record.

    Raises:
        TopicMissingError: no such topic.
        BrokerUnreachableError: no broker answers at ``bootstrap``.
        InfraError: the read stalled (a partition made no progress for 10 s).
    """
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.errors import KafkaConnectionError

    from infra.topics import describe_topics

    try:
        info = await describe_topics(bootstrap, [topic])
    except KafkaConnectionError:
        raise _unreachable(bootstrap) from None
    if topic not in info:
        raise TopicMissingError(f"topic {topic} does not exist on {bootstrap}")
    parts = [TopicPartition(topic, p) for p in range(info[topic].partitions)]
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        client_id="fiml-replay",
        isolation_level="read_committed",
    )
    result = ExportResult()
    sink = sink_for(fmt, out, models, meta, result)
    # One writer thread: chunks are written in order, one at a time, while the next ones are
    # read; at most WRITE_AHEAD wait for it, which bounds memory.
    writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fiml-replay-writer")
    loop = asyncio.get_running_loop()
    pending = deque([loop.run_in_executor(writer, sink.prepare)])
    try:
        await consumer.start()
        begins, stops = await _range_offsets(consumer, parts, start_ms, end_ms)
        consumer.assign(list(begins))  # only partitions with records in the range
        wanted = frozenset(s.encode() for s in symbols)
        async for chunk in _chunks(consumer, begins, stops, wanted, meta, chunk_records, progress):
            pending.append(loop.run_in_executor(writer, sink.write, chunk))
            while len(pending) > WRITE_AHEAD or (pending and pending[0].done()):
                await pending.popleft()  # raises what the write raised
        while pending:
            await pending.popleft()
    except KafkaConnectionError:
        raise _unreachable(bootstrap) from None
    finally:
        # after an error: the chunks already handed over are written (or fail) before close
        for write in pending:
            with contextlib.suppress(Exception):
                await write
        try:
            await loop.run_in_executor(writer, sink.close)
        finally:
            writer.shutdown()
            await consumer.stop()
    return result


def _unreachable(bootstrap: str) -> BrokerUnreachableError:
    return BrokerUnreachableError(
        f"no Kafka broker answers at {bootstrap}: start one (fiml kafka start) or pass --bootstrap"
    )
