"""The candle index: the latest revision of every candle of ``fiml.ohlcv``, in SQLite.

``GET /ohlcv`` used to scan the topic for each request: every record of every symbol and
interval from the range's start to its end, decoded and dropped but for one series. Its cost
grew with the topic, not with the answer. Here each window's latest revision is kept under
its key ``(symbol, interval, window_start_ms)`` in a table clustered on that key (``WITHOUT
ROWID``), so a day of 1m candles of one symbol is one range read of 1,440 rows, whatever else
the topic holds.

Why SQLite (stdlib ``sqlite3``, no new dependency) and not DuckDB or a compacted topic:
docs/PERFORMANCE.md, "GET /ohlcv: candles from an index".

What the file holds, always as of one consistent point of the topic:

* ``candles``: per window, the revision ``NewestCandles.add`` would keep (a final one wins,
  then the highest ``rev``, then the one read last), its record bytes as the topic's model
  encodes them (what ``GET /ohlcv`` answers), and where it was read (partition, offset), so
  that records deleted by retention leave the index as they leave the topic (``retain``);
* ``partitions``: per partition, the next offset to read, the log start applied by the last
  ``retain`` and the Kafka timestamp of the first record left there (``retained_from``);
* ``meta``: the layout's version and the topic's epoch (gateway/positions.py).

A batch's candles and the offsets after it are written in one transaction (``ingest``): a
gateway that stops, however abruptly, resumes exactly where the file says. Pure but for the
file; one instance per thread (an ``sqlite3`` connection stays in the thread that made it):
gateway/candle_feed.py is the I/O shell that feeds it and asks it.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from schemas.codec import decode, encode
from schemas.errors import DecodeError
from schemas.records import Interval, OHLCVUpdate

__all__ = [
    "MEMORY",
    "Answer",
    "CandleIndex",
    "CandleRow",
    "Message",
    "PartitionState",
    "candle_row",
    "covers",
    "newest_revisions",
    "retention_pending",
]

#: The path of an index that lives in memory only (rebuilt from the topic at every start).
MEMORY = ":memory:"
#: The layout of the file; a file of another layout is rebuilt, not migrated (it is a cache of
#: the topic).
LAYOUT_VERSION = "1"

# Pages of 16 KiB: a row (its ~330-byte record and key) stays under 1/20 of a page, where
# SQLite's documentation says WITHOUT ROWID tables work well, and a day of 1m candles of one
# symbol (~480 KiB) is about 30 pages read in key order.
_PAGE_SIZE = 16_384
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS partitions (
    partition INTEGER PRIMARY KEY,
    next_offset INTEGER NOT NULL,
    log_start INTEGER NOT NULL DEFAULT 0,
    whole_from_ms INTEGER
);
CREATE TABLE IF NOT EXISTS candles (
    symbol TEXT NOT NULL,
    interval TEXT NOT NULL,
    window_start_ms INTEGER NOT NULL,
    is_final INTEGER NOT NULL,
    rev INTEGER NOT NULL,
    part INTEGER NOT NULL,
    off INTEGER NOT NULL,
    record BLOB NOT NULL,
    PRIMARY KEY (symbol, interval, window_start_ms)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS candles_by_offset ON candles (part, off);
"""
# The row-value comparison is NewestCandles.add's rule: on a tie the revision read last wins.
_UPSERT = """
INSERT INTO candles (symbol, interval, window_start_ms, is_final, rev, part, off, record)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (symbol, interval, window_start_ms) DO UPDATE SET
    is_final = excluded.is_final, rev = excluded.rev, part = excluded.part,
    off = excluded.off, record = excluded.record
WHERE (excluded.is_final, excluded.rev) >= (candles.is_final, candles.rev)
"""
_POSITION = """
INSERT INTO partitions (partition, next_offset) VALUES (?, ?)
ON CONFLICT (partition) DO UPDATE SET next_offset = excluded.next_offset
"""


class Message(Protocol):
    """What the index needs of a Kafka record (aiokafka's ``ConsumerRecord`` has it)."""

    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...


@dataclass(frozen=True, slots=True)
class CandleRow:
    """One revision of a candle as the index stores it."""

    symbol: str
    interval: str
    window_start_ms: int
    is_final: bool
    rev: int
    partition: int
    offset: int
    record: bytes

    def columns(self) -> tuple[str, str, int, bool, int, int, int, bytes]:
        """The row's values in the order of the ``candles`` table's columns."""
        return (
            self.symbol,
            self.interval,
            self.window_start_ms,
            self.is_final,
            self.rev,
            self.partition,
            self.offset,
            self.record,
        )

    def outranks(self, held: CandleRow) -> bool:
        """True if this revision, read after ``held``, replaces it (``NewestCandles.add``)."""
        return (self.is_final, self.rev) >= (held.is_final, held.rev)


@dataclass(frozen=True, slots=True)
class PartitionState:
    next_offset: int
    #: Rows read before this offset were deleted (``retain``): the topic's log start then.
    log_start: int = 0
    #: The Kafka timestamp of the first record left at ``log_start`` when retention deleted
    #: some; None when nothing was deleted, or nothing is left.
    whole_from_ms: int | None = None


@dataclass(frozen=True, slots=True)
class Answer:
    """A range of one series, read in one snapshot of the index."""

    records: list[bytes]  # the latest revision of each window, oldest first
    truncated: bool  # there are older windows in the range than the ones answered
    next_end: int | None  # the ``end`` that asks for them: the oldest window answered
    #: The range's last window, or a later one, is final: no record the index has not read yet
    #: can change this answer (the worker's order: docs/ARBITRATION.md, Candles).
    closed: bool
    #: Where retention deleted the start of the range: the time from which the topic is whole.
    retained_from: int | None
    #: The index's state of each partition at this snapshot.
    partitions: dict[int, PartitionState]

    def covers(self, begins: Mapping[int, int], ends: Mapping[int, int]) -> bool:
        """``covers`` of this snapshot's partitions."""
        return covers(self.partitions, begins, ends)


def covers(
    partitions: Mapping[int, PartitionState], begins: Mapping[int, int], ends: Mapping[int, int]
) -> bool:
    """True if an index whose partitions are ``partitions`` had read each one to ``ends`` and
    applied retention up to ``begins`` (the topic's offsets when a request came): it is not
    older than the topic was then."""
    for p, end in ends.items():
        state, begin = partitions.get(p), begins.get(p, 0)
        if state is None:
            if end > begin:  # records it has not read
                return False
        elif state.next_offset < end or retention_pending(state, begin, end):
            return False
    return True


def retention_pending(state: PartitionState | None, begin: int, end: int) -> bool:
    """True if the index has not applied the retention of a partition whose log runs from
    ``begin`` to ``end`` now: its log start moved on since, or records came to a partition
    retention had emptied (the first of them says from when the partition is whole)."""
    if state is None:
        return True
    return state.log_start < begin or (state.whole_from_ms is None and 0 < begin < end)


def candle_row(message: Message) -> CandleRow | None:
    """The record as a row, or None: a tombstone, bytes that are not a valid ``OHLCVUpdate``,
    or a candle keyed by another symbol. These are the records ``GET /ohlcv``'s scan skips
    (``rest._candle``): a candle under another symbol's key is no symbol's."""
    if message.value is None:
        return None
    try:
        candle = decode(OHLCVUpdate, message.value)
    except DecodeError:
        return None
    if message.key is not None and message.key != candle.symbol.encode():
        return None
    return CandleRow(
        candle.symbol,
        candle.interval.value,
        candle.window_start_ms,
        candle.is_final,
        candle.rev,
        message.partition,
        message.offset,
        # Re-encoded by the model: exactly what the scan answers (model_dump of the decode),
        # whatever spacing or key order the producer wrote.
        encode(candle),
    )


def newest_revisions(rows: Iterable[CandleRow]) -> list[CandleRow]:
    """The revision of each window that wins among ``rows`` (in the order read). Folding a
    batch first leaves the database one write per window instead of one per revision; the
    rule is associative, so the result is the same as upserting every row in turn."""
    held: dict[tuple[str, str, int], CandleRow] = {}
    for row in rows:
        key = (row.symbol, row.interval, row.window_start_ms)
        current = held.get(key)
        if current is None or row.outranks(current):
            held[key] = row
    return list(held.values())


class CandleIndex:
    """The index in one SQLite file (or in memory). Use from one thread only.

    The writer (the feed) opens it with ``prepare``, which rebuilds a file of another layout
    or topic epoch; readers open the same file without it, after the writer (WAL mode: they
    read the last committed state while the writer writes).
    """

    def __init__(self, path: str | Path) -> None:
        """Raises: sqlite3.Error: the file cannot be opened (or is not a database)."""
        self.path = str(path)
        self._db = self._connect()

    def _connect(self) -> sqlite3.Connection:
        # Autocommit mode: transactions are explicit (``_transaction``), and a read outside one
        # sees the latest commit.
        db = sqlite3.connect(self.path, isolation_level=None)
        db.execute(f"PRAGMA page_size = {_PAGE_SIZE}")  # only takes effect on a new file
        if self.path != MEMORY:
            db.execute("PRAGMA journal_mode = WAL")
            # With WAL, NORMAL syncs at checkpoints: a power cut may lose the last commits, and
            # the offsets with them, so the records are read again. Nothing is half written.
            db.execute("PRAGMA synchronous = NORMAL")
        return db

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def close(self) -> None:
        self._db.close()

    # --- the writer -----------------------------------------------------------------------

    def prepare(self, epoch: str) -> bool:
        """Make the file an index of the topic of ``epoch``: kept if it is one (same layout,
        same epoch), else emptied. Returns True if it was kept."""
        self._db.executescript(_SCHEMA)
        stored = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
        if stored == {"layout": LAYOUT_VERSION, "epoch": epoch}:
            return True
        self.reset(epoch)
        return False

    def reset(self, epoch: str) -> None:
        """Forget everything: an empty index of the topic of ``epoch``. A file is deleted and
        made again (deleting millions of rows would take longer, and not shrink it)."""
        self._db.close()
        if self.path != MEMORY:
            for suffix in ("", "-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.path + suffix)
        self._db = self._connect()
        self._db.executescript(_SCHEMA)
        with self._transaction() as db:
            db.executemany(
                "INSERT INTO meta (key, value) VALUES (?, ?)",
                [("layout", LAYOUT_VERSION), ("epoch", epoch)],
            )

    def epoch(self) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = 'epoch'").fetchone()
        return None if row is None else str(row[0])

    def ingest(self, messages: Sequence[Message], positions: Mapping[int, int]) -> int:
        """Fold ``messages`` in and store ``positions`` (the next offset to read of each
        partition after them), in one transaction. Returns how many records were skipped
        (``candle_row``: not candles)."""
        rows = [row for row in map(candle_row, messages) if row is not None]
        with self._transaction() as db:
            db.executemany(
                _UPSERT,
                [row.columns() for row in newest_revisions(rows)],
            )
            db.executemany(_POSITION, positions.items())
        return len(messages) - len(rows)

    def retain(self, log_starts: Mapping[int, int], whole_from: Mapping[int, int | None]) -> int:
        """Apply retention: drop the rows read before each partition's ``log_starts`` (their
        records are gone from the topic), move a position behind it up to it (what it had
        not read is gone too), and note ``whole_from`` (``PartitionState.whole_from_ms``).
        Returns how many rows were dropped."""
        dropped = 0
        with self._transaction() as db:
            for p, start in log_starts.items():
                dropped += db.execute(
                    "DELETE FROM candles WHERE part = ? AND off < ?", (p, start)
                ).rowcount
                db.execute(
                    "INSERT INTO partitions (partition, next_offset, log_start, whole_from_ms)"
                    " VALUES (?1, ?2, ?2, ?3) ON CONFLICT (partition) DO UPDATE SET"
                    " next_offset = max(next_offset, ?2), log_start = ?2, whole_from_ms = ?3",
                    (p, start, whole_from.get(p)),
                )
        return dropped

    # --- readers ----------------------------------------------------------------------------

    def partitions(self) -> dict[int, PartitionState]:
        return {
            p: PartitionState(offset, start, whole)
            for p, offset, start, whole in self._db.execute(
                "SELECT partition, next_offset, log_start, whole_from_ms FROM partitions"
            )
        }

    def answer(self, symbol: str, interval: str, start: int, end: int, limit: int) -> Answer:
        """The newest ``limit`` windows of ``(symbol, interval)`` with ``start <=
        window_start_ms < end``, oldest first, and what else a response needs, from one
        snapshot of the index."""
        self._db.execute("BEGIN")  # one read snapshot for every query below
        try:
            newest = self._db.execute(
                "SELECT window_start_ms, record FROM candles WHERE symbol = ? AND interval = ?"
                " AND window_start_ms >= ? AND window_start_ms < ?"
                " ORDER BY window_start_ms DESC LIMIT ?",
                (symbol, interval, start, end, limit + 1),
            ).fetchall()
            closed = (
                self._db.execute(
                    "SELECT 1 FROM candles WHERE symbol = ? AND interval = ?"
                    " AND window_start_ms >= ? AND is_final LIMIT 1",
                    (symbol, interval, _last_window(interval, end)),
                ).fetchone()
                is not None
            )
            partitions = self.partitions()
        finally:
            self._db.execute("COMMIT")
        truncated = len(newest) > limit
        kept = newest[:limit]
        kept.reverse()
        # As the scan says it (rest.read_candles): the partitions whose first record left
        # after retention is later than the range's start; the latest of those times.
        late = [
            s.whole_from_ms
            for s in partitions.values()
            if s.whole_from_ms is not None and s.whole_from_ms > start
        ]
        return Answer(
            records=[record for _, record in kept],
            truncated=truncated,
            next_end=kept[0][0] if truncated else None,
            closed=closed,
            retained_from=max(late) if late else None,
            partitions=partitions,
        )


def _last_window(interval: str, end: int) -> int:
    """The start of the window that holds ``end - 1``: the range's last window."""
    return Interval(interval).window_start(end - 1)
