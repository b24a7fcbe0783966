"""The candle index's I/O shell: it feeds the index from ``fiml.ohlcv`` and answers from it.

One background task per gateway reads the topic with a consumer of its own (no group, manual
assignment, ``read_committed`` like every gateway read) from the offsets the index file holds
to the topic's end, then follows it. Each batch is decoded, folded and written in one SQLite
transaction, with the offsets after it, in a writer thread; requests read the file in a
reader thread (WAL mode: readers see the last commit while the writer writes). The event loop
never waits on SQLite, and each ``sqlite3`` connection stays in the thread that opened it.

Freshness: an answer is never older than the topic was when the request came. A range whose
last window (or a later one) the index holds as final is answered at once: the worker makes a
symbol's windows final in order and never revises a final one, so nothing the index has not
read yet can change it (the scan's rule, gateway/rest.py). Any other range (it reaches the
present) asks the broker for the topic's offsets (two ListOffsets requests) and is answered
once the index has read to those ends and applied retention up to those log starts, within
``candle_index_wait_s``; else ``IndexBehind`` (a 503 with ``Retry-After``). An index still
building from the start of a big topic says so at once, with its estimate, rather than hold the
request for nothing. The topic is not scanned instead: that is the cost the index removes, and
many clients polling a gateway that just started would multiply it when it is busiest.

When the index cannot be used (switched off, never started, or failed: a disk error, a file
another gateway holds) ``GET /ohlcv`` scans the topic as before (gateway/rest.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import itertools
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from enum import Enum
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, ParamSpec, TypeVar

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from gateway.candle_index import (
    MEMORY,
    Answer,
    CandleIndex,
    PartitionState,
    covers,
    retention_pending,
)
from gateway.errors import RangeReadError

if TYPE_CHECKING:
    from gateway.hub import Hub
    from gateway.settings import GatewaySettings

__all__ = [
    "OFF",
    "CandleFeed",
    "IndexBehind",
    "IndexFileBusy",
    "IndexState",
    "claim_index_file",
    "retry_after_s",
]

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

TOPIC = "fiml.ohlcv"
#: ``candle_index`` value that switches the index off: GET /ohlcv scans the topic.
OFF = "off"
#: Records read at most per batch, each batch one transaction (the batch is also what a request
#: for the present may wait behind).
BATCH_RECORDS = 5_000
#: How long one poll of the topic waits for records, and so how soon a stop or a request for
#: retention to be applied is seen (ms).
POLL_MS = 200
#: The broker may hold a fetch this long when a partition has nothing new (ms). aiokafka leaves
#: partitions whose records are still buffered out of the next fetch, so while the index
#: catches up a long wait on the idle ones would stall the busy ones (the hub's FETCH_MAX_WAIT_MS
#: has the same reason); 50 ms is ~20 cheap fetches a second at idle.
FETCH_MAX_WAIT_MS = 50
#: How often the topic's log starts are checked for retention (seconds); a request whose range
#: reaches the present checks them itself.
RETENTION_CHECK_S = 30.0
#: The topic's offsets must come within this time, else the request is a 503 (seconds).
OFFSETS_TIMEOUT_S = 5.0
#: How long a stopping feed may take to finish its batch before it is cancelled (seconds).
STOP_S = 15.0
# What the broker may do for a moment (a lost connection, a timeout: ``TimeoutError`` is an
# ``OSError``), and the reader's "no progress": the feed reconnects. SQLite's errors are not
# among them: a disk error fails the index.
_BROKER_ERRORS = (KafkaError, OSError, RangeReadError)


class IndexState(Enum):
    NEW = "new"  # not started: GET /ohlcv scans the topic
    STARTING = "starting"  # waiting for the topic's partitions, opening the file
    BUILDING = "building"  # reading up to the end the topic had when it started
    LIVE = "live"  # caught up (once); following the topic
    FAILED = "failed"  # stopped on an error: GET /ohlcv scans the topic
    STOPPED = "stopped"


class IndexBehind(Exception):
    """The index has not read the topic as far as the request needs yet."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class IndexFileBusy(Exception):
    """The configured index file is held by another gateway."""


def retry_after_s(behind: int, records_per_s: float | None) -> float | None:
    """When an index ``behind`` offsets from the end, reading ``records_per_s``, should have
    caught up (seconds); None when there is no rate to tell yet."""
    if records_per_s is None or records_per_s <= 0:
        return None
    return behind / records_per_s


def claim_index_file(configured: str) -> tuple[str, IO[str] | None]:
    """The index file of this gateway and the lock that keeps it its own while it runs.

    ``configured`` (``candle_index``): ``:memory:`` (no file, no lock), a path (refused with
    ``IndexFileBusy`` if another gateway holds it), or empty: the first of
    ``$FIML_HOME/gateway-candles/0.sqlite3``, ``1.sqlite3``, ... that no other gateway holds.
    Gateways of one machine never share a file, a restarted gateway finds its file again (or
    another gateway's former one: any index of the same topic epoch is as good), and the number
    of files stays the number of gateways that ran at once.
    """
    if configured == MEMORY:
        return MEMORY, None
    if configured:
        path = Path(configured)
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = _lock(path)
        if lock is None:
            raise IndexFileBusy(f"the candle index {path} is in use by another gateway")
        return str(path), lock
    from infra.broker import fiml_home

    folder = fiml_home() / "gateway-candles"
    folder.mkdir(parents=True, exist_ok=True)
    for n in itertools.count():
        path = folder / f"{n}.sqlite3"
        lock = _lock(path)
        if lock is not None:
            return str(path), lock
    raise AssertionError("unreachable")


def _lock(path: Path) -> IO[str] | None:
    """An exclusive lock on ``path``'s lock file, or None if another holder has it (another
    process, or another gateway of this one: flock locks belong to the open file)."""
    lock = (path.parent / f"{path.name}.lock").open("a")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        return None
    return lock


class CandleFeed:
    """Keeps one gateway's candle index and answers ``GET /ohlcv`` from it."""

    def __init__(self, settings: GatewaySettings, hub: Hub) -> None:
        self._settings = settings
        self._hub = hub
        self.state = IndexState.NEW
        self.failure: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._consumer: AIOKafkaConsumer | None = None
        #: Asks the topic's offsets for requests, on a connection of its own: a broker answers
        #: a connection's requests in order, so on the feed's they would wait behind its fetch
        #: in flight (up to FETCH_MAX_WAIT_MS while the topic is quiet).
        self._offsets: AIOKafkaConsumer | None = None
        self._partitions: list[TopicPartition] = []
        # One thread per connection: the writer's, and the readers' (the same one in memory,
        # where a second connection would be another, empty, database).
        self._write_pool = ThreadPoolExecutor(1, thread_name_prefix="fiml-candles-write")
        self._read_pool = self._write_pool
        self._index: CandleIndex | None = None
        self._reader: CandleIndex | None = None
        self._lock: IO[str] | None = None
        #: The committed state of each partition (as in the file), and an event set at each
        #: commit (then replaced) for the requests that wait for the index to get somewhere.
        self._committed: dict[int, PartitionState] = {}
        self._progress = asyncio.Event()
        self._retain_now = False
        self._build_ends: dict[int, int] = {}
        self._started_at = 0.0
        #: Records read and skipped (not candles) since start; seconds the first catch-up took.
        self.read = 0
        self.skipped = 0
        self.build_s: float | None = None

    @property
    def serving(self) -> bool:
        """True when ``GET /ohlcv`` should be answered from the index (else by a scan)."""
        return self.state in (IndexState.STARTING, IndexState.BUILDING, IndexState.LIVE)

    def health(self) -> dict[str, Any]:
        """What ``/health`` says of the index."""
        body: dict[str, Any] = {
            "state": self.state.value,
            "behind": self._behind_highwater(),
            "read": self.read,
            "skipped": self.skipped,
            "build_s": None if self.build_s is None else round(self.build_s, 3),
        }
        if self.failure is not None:
            body["reason"] = self.failure
        return body

    async def start(self) -> None:
        """Start building and following the index in the background (the hub must have
        started: the index takes the topic's partitions and epoch from it)."""
        if self.state is not IndexState.NEW:
            raise RuntimeError(f"cannot start a candle index that is {self.state.value}")
        self.state = IndexState.STARTING
        self._started_at = time.monotonic()
        self._task = asyncio.create_task(self._run(), name="fiml-gateway-candles")

    async def stop(self) -> None:
        """Stop following and close the file (safe to call twice, or without a start)."""
        self._stopping.set()
        if self._task is not None:
            # it stops between batches: let it close its consumer (cancelled while the consumer
            # starts or stops, aiokafka leaks connections)
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(asyncio.shield(self._task), STOP_S)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        if self.state is not IndexState.FAILED:
            self.state = IndexState.STOPPED
        self._wake()
        loop = asyncio.get_running_loop()
        for pool, index in ((self._read_pool, self._reader), (self._write_pool, self._index)):
            if index is not None:
                with contextlib.suppress(Exception):
                    await loop.run_in_executor(pool, index.close)
        self._reader = self._index = None
        await asyncio.to_thread(self._shutdown_pools)
        if self._lock is not None:
            self._lock.close()  # releases the file for the next gateway
            self._lock = None

    def _shutdown_pools(self) -> None:
        self._read_pool.shutdown()
        self._write_pool.shutdown()

    # --- answering --------------------------------------------------------------------------

    async def answer(self, symbol: str, interval: str, start: int, end: int, limit: int) -> Answer:
        """The newest ``limit`` candles of ``(symbol, interval)`` with ``start <=
        window_start_ms < end`` (``CandleIndex.answer``), never older than the topic was when
        this was called.

        Raises:
            IndexBehind: the index did not get as far as needed within ``candle_index_wait_s``
                (or will clearly not), or it stopped.
            KafkaError, OSError: the topic's offsets could not be had (``TimeoutError`` is an
                ``OSError``).
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._settings.candle_index_wait_s
        while self._reader is None:  # still opening (the topic may not exist yet)
            if not self.serving:
                raise IndexBehind("the candle index stopped", 1.0)
            if not await self._wait_progress(deadline):
                raise IndexBehind("the candle index is starting", 1.0)
        answer = await self._read(symbol, interval, start, end, limit)
        if answer.closed:
            return answer
        begins, ends = await self._topic_offsets()
        while not answer.covers(begins, ends):
            if loop.time() > deadline:
                raise IndexBehind("the candle index has not read the topic's latest records", 1.0)
            if any(
                retention_pending(self._committed.get(p), b, ends.get(p, 0))
                for p, b in begins.items()
            ):
                self._retain_now = True  # the feed applies it at its next poll
            self._refuse_if_hopeless(ends, deadline - loop.time())
            while not covers(self._committed, begins, ends):
                if not await self._wait_progress(deadline):
                    raise IndexBehind(
                        "the candle index has not read the topic's latest records yet", 1.0
                    )
            answer = await self._read(symbol, interval, start, end, limit)
        return answer

    def _refuse_if_hopeless(self, ends: dict[int, int], left_s: float) -> None:
        """Raises: IndexBehind at once when the index, still building, will not catch up
        within the time the request may wait: the client is told when to come back."""
        if self.state is not IndexState.BUILDING:
            return
        behind = sum(
            max(0, end - self._committed.get(p, PartitionState(0)).next_offset)
            for p, end in ends.items()
        )
        elapsed = time.monotonic() - self._started_at
        eta = retry_after_s(behind, self.read / elapsed if self.read and elapsed > 0 else None)
        if eta is not None and eta > left_s:
            raise IndexBehind(
                f"the candle index is being built ({behind} records to go, about {eta:.0f} s)",
                eta,
            )

    async def _wait_progress(self, deadline: float) -> bool:
        """Wait for the next commit (or a change of state); False once ``deadline`` passed."""
        left = deadline - asyncio.get_running_loop().time()
        if left <= 0 or not self.serving:
            return False
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._progress.wait(), left)
        return self.serving

    def _wake(self) -> None:
        self._progress.set()
        self._progress = asyncio.Event()

    async def _read(self, symbol: str, interval: str, start: int, end: int, limit: int) -> Answer:
        reader = self._reader
        if reader is None:
            raise IndexBehind("the candle index stopped", 1.0)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._read_pool, reader.answer, symbol, interval, start, end, limit
        )

    async def _topic_offsets(self) -> tuple[dict[int, int], dict[int, int]]:
        """The topic's log start and end (last stable offset) per partition, now."""
        consumer = self._offsets
        if consumer is None:
            raise IndexBehind("the candle index is (re)connecting to the broker", 1.0)
        begins, ends = await asyncio.wait_for(
            asyncio.gather(
                consumer.beginning_offsets(self._partitions),
                consumer.end_offsets(self._partitions),
            ),
            OFFSETS_TIMEOUT_S,
        )
        return (
            {tp.partition: o for tp, o in begins.items()},
            {tp.partition: o for tp, o in ends.items()},
        )

    def _behind_highwater(self) -> int | None:
        """Offsets between the index and the topic's end as of the last fetch (no request)."""
        consumer = self._consumer
        if consumer is None or self._index is None:
            return None
        behind = 0
        for tp in self._partitions:
            end = consumer.last_stable_offset(tp)
            end = consumer.highwater(tp) if end is None else end
            state = self._committed.get(tp.partition)
            if end is not None and state is not None:
                behind += max(0, end - state.next_offset)
        return behind

    # --- feeding ----------------------------------------------------------------------------

    async def _write(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._write_pool, lambda: fn(*args, **kwargs))

    async def _run(self) -> None:
        try:
            if not await self._wait_for_topic():
                return
            await self._open_file()
            while not self._stopping.is_set():
                try:
                    await self._connect()
                    await self._follow()
                except _BROKER_ERRORS as exc:  # the broker, for a moment: the hub rides it out
                    log.warning("candle index: Kafka error, reconnecting in 1 s: %r", exc)
                    await self._disconnect()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stopping.wait(), 1.0)
        except Exception as exc:  # a disk error, a bug: GET /ohlcv scans the topic instead
            self.failure = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            self.state = IndexState.FAILED
            log.error("candle index: stopped (%s); GET /ohlcv scans the topic", self.failure)
            log.debug("candle index failure", exc_info=True)
        finally:
            await self._disconnect()
            self._wake()

    async def _wait_for_topic(self) -> bool:
        """Wait until the hub knows the topic's partitions; False if the gateway stops first."""
        while not self._hub.positions(TOPIC):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), 0.2)
            if self._stopping.is_set():
                return False
        return True

    async def _open_file(self) -> None:
        """Claim and open the index file, emptied if it is not of this topic's epoch."""
        path, self._lock = await self._write(claim_index_file, self._settings.candle_index)
        self._index = index = await self._write(CandleIndex, path)
        if not await self._write(index.prepare, self._hub.epoch(TOPIC)):
            log.info("candle index: building %s from the start of the topic", path)

    async def _connect(self) -> None:
        """Start the consumers, check the file against the topic (rebuilt if it is ahead),
        apply retention and seek where the file says; open the reader the first time."""
        assert self._index is not None
        index = self._index
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self._settings.bootstrap,
            group_id=None,
            enable_auto_commit=False,
            # A position retention deleted moves to the log start: what it held is gone from
            # the topic, and ``retain`` drops it from the index too.
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            client_id="fiml-gateway-candles",
            fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
        )
        await self._consumer.start()
        self._offsets = AIOKafkaConsumer(
            bootstrap_servers=self._settings.bootstrap,
            group_id=None,
            enable_auto_commit=False,
            isolation_level="read_committed",  # its ends are last stable offsets
            client_id="fiml-gateway-candles-offsets",
        )
        await self._offsets.start()
        physical = self._hub.physical(TOPIC)
        self._assign([TopicPartition(physical, p) for p in range(len(self._hub.positions(TOPIC)))])
        begins, ends = await self._topic_offsets()
        stored = await self._write(index.partitions)
        if any(p not in ends or s.next_offset > ends[p] for p, s in stored.items()):
            # Offsets the topic never reached: it was deleted and made again under this name.
            log.warning("candle index: the file is ahead of the topic; rebuilding it")
            await self._write(index.reset, self._hub.epoch(TOPIC))
            stored = {}
            await self._reopen_reader(index.path)
        for tp in self._partitions:
            state = stored.get(tp.partition)
            self._consumer.seek(tp, begins[tp.partition] if state is None else state.next_offset)
        await self._retain(begins, ends)  # and up to the log start where retention passed it
        if self._reader is None:
            if index.path != MEMORY:
                self._read_pool = ThreadPoolExecutor(1, thread_name_prefix="fiml-candles-read")
                self._reader = await asyncio.get_running_loop().run_in_executor(
                    self._read_pool, CandleIndex, index.path
                )
            else:
                self._reader = index
            self._build_ends = ends
        self._caught_up()
        if self.state is IndexState.STARTING:
            self.state = IndexState.BUILDING
        self._wake()

    async def _reopen_reader(self, path: str) -> None:
        """After a reset the file is a new one: a reader opened before (a reconnect) still
        reads the deleted one, whose offsets are ahead of the new topic's."""
        if self._reader is None or path == MEMORY or self._read_pool is None:
            return
        loop = asyncio.get_running_loop()
        old = self._reader
        self._reader = await loop.run_in_executor(self._read_pool, CandleIndex, path)
        with contextlib.suppress(Exception):
            await loop.run_in_executor(self._read_pool, old.close)

    async def _disconnect(self) -> None:
        consumers = (self._consumer, self._offsets)
        self._consumer = self._offsets = None
        for consumer in consumers:
            if consumer is not None:
                with contextlib.suppress(*_BROKER_ERRORS):
                    await consumer.stop()

    def _caught_up(self) -> None:
        if self.state is not IndexState.LIVE and covers(self._committed, {}, self._build_ends):
            self.state = IndexState.LIVE
            self.build_s = time.monotonic() - self._started_at
            log.info("candle index: caught up in %.1f s (%d records)", self.build_s, self.read)

    async def _follow(self) -> None:
        assert self._consumer is not None and self._index is not None
        consumer, index = self._consumer, self._index
        loop = asyncio.get_running_loop()
        next_check = loop.time() + RETENTION_CHECK_S
        while not self._stopping.is_set():
            if self._retain_now or loop.time() >= next_check:
                self._retain_now = False
                next_check = loop.time() + RETENTION_CHECK_S
                await self._grow()
                await self._retain(*await self._topic_offsets())
            batches = await consumer.getmany(timeout_ms=POLL_MS, max_records=BATCH_RECORDS)
            # Positions, not the last records' offsets: transaction markers take offsets too,
            # and a batch of markers alone moves them. Nothing is consumed between the getmany
            # and here, so they are exactly "after these records".
            moved: dict[int, int] = {}
            for tp in self._partitions:
                position = await consumer.position(tp)
                if position != self._committed[tp.partition].next_offset:
                    moved[tp.partition] = position
            if not moved:
                continue
            messages = [m for batch in batches.values() for m in batch]
            skipped = await self._write(index.ingest, messages, moved)
            for p, position in moved.items():
                self._committed[p] = _moved_to(self._committed[p], position)
            self.read += len(messages)
            if skipped:
                self.skipped += skipped
                log.warning("candle index: skipped %d records that are not candles", skipped)
            self._caught_up()
            self._wake()

    async def _grow(self) -> None:
        """Follow partitions added to the topic since the start (the hub finds them)."""
        assert self._consumer is not None
        count = len(self._hub.positions(TOPIC))
        if count <= len(self._partitions):
            return
        physical = self._hub.physical(TOPIC)
        self._assign([TopicPartition(physical, p) for p in range(count)])
        # assigning forgets the positions: seek them again (``_retain`` then notes the new
        # partitions in the file)
        begins = await self._consumer.beginning_offsets(self._partitions)
        for tp in self._partitions:
            state = self._committed.get(tp.partition)
            self._consumer.seek(tp, begins[tp] if state is None else state.next_offset)

    def _assign(self, partitions: list[TopicPartition]) -> None:
        """Read ``partitions`` (the feed), and ask their offsets (never fetching: paused)."""
        assert self._consumer is not None and self._offsets is not None
        self._partitions = partitions
        self._consumer.assign(partitions)
        self._offsets.assign(partitions)
        for tp in partitions:
            self._offsets.seek(tp, 0)  # a position, so that it never looks one up
        self._offsets.pause(*partitions)

    async def _retain(self, begins: dict[int, int], ends: dict[int, int]) -> None:
        """Apply the topic's log starts where they moved since the index last did (rows
        retention deleted from the topic leave the index), and reload the committed state."""
        assert self._index is not None
        stored = await self._write(self._index.partitions)
        moved = {
            p: b for p, b in begins.items() if retention_pending(stored.get(p), b, ends.get(p, 0))
        }
        if moved:
            whole_from = await self._first_timestamps(begins, ends)
            dropped = await self._write(self._index.retain, moved, whole_from)
            if dropped:
                log.info("candle index: dropped %d candles retention deleted", dropped)
            stored = await self._write(self._index.partitions)
        self._committed = stored
        if moved and self._consumer is not None:
            for tp in self._partitions:  # a position moved up to the log start
                if await self._consumer.position(tp) < stored[tp.partition].next_offset:
                    self._consumer.seek(tp, stored[tp.partition].next_offset)
        self._wake()

    async def _first_timestamps(
        self, begins: dict[int, int], ends: dict[int, int]
    ) -> dict[int, int | None]:
        """The Kafka timestamp of the first record left in each partition that retention cut
        (``0 < log start < end``): what ``retained_from`` says, as the scan finds it."""
        if not any(0 < begins[p] < ends.get(p, 0) for p in begins):
            return {}
        async with self._hub.reader(TOPIC) as reader:
            first = await reader.deleted_after(-1)
        return dict(first)


def _moved_to(state: PartitionState, next_offset: int) -> PartitionState:
    return PartitionState(next_offset, state.log_start, state.whole_from_ms)
