"""``ArbitrationWorker``: raw batches in, one Kafka transaction per raw partition out.

The worker drives an engine (the pure processor) over three ports (``ports.py``): a batch
source, a publisher and a checkpoint store. It holds the guarantees; the ports only move bytes.
Read ``handle`` first: it is what happens to a batch.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence, Set

from agents.arbitration.core.processor import RAW, Output
from agents.arbitration.engine import ArbitrationEngine
from agents.arbitration.metrics import WorkerCounters
from agents.arbitration.settings import ArbitrationSettings
from agents.arbitration.worker.errors import FencedError, UnreadableCheckpointError
from agents.arbitration.worker.ports import BatchSource, CheckpointStore, Publisher, RawRecord

__all__ = ["ArbitrationWorker"]

log = logging.getLogger("fiml.arbitration")
#: How long a clean stop waits for the running batch or commit before letting go without one.
STOP_WAIT_S = 10.0


class ArbitrationWorker:
    """Applies each fetched batch with ``engine`` and publishes what it made, one transaction
    per raw partition: that partition's outputs, its checkpoint and its consumed offset.

    Every entry point (``handle``, ``assigned``, ``revoked``, ``commit_quiet``, ``stop``) runs
    alone, under one lock: a commit never runs while a batch sends into the same transaction,
    and a revocation waits for the running batch, so the state it commits is whole.
    """

    def __init__(
        self,
        engine: ArbitrationEngine,
        source: BatchSource,
        publisher: Publisher,
        checkpoints: CheckpointStore,
        settings: ArbitrationSettings,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.engine = engine
        self.source = source
        self.publisher = publisher
        self.checkpoints = checkpoints
        self.counters = WorkerCounters()
        self._commit_every_s = settings.commit_ms / 1000
        self._clock = clock
        self._lock = asyncio.Lock()
        self._owned: set[int] = set()  # taken over: the publisher's and the state restored
        self._fenced: set[int] = set()  # fenced since the last assignment: never written again
        self._torn: set[int] = set()  # their last batch's outputs are not all sent: no commit
        self._committed_at: dict[int, float] = {}  # partition -> clock() of its last commit
        self._last_taken: dict[int, int] = {}  # partition -> offset of the last record applied

    # -- a batch ----------------------------------------------------------------------------

    async def handle(self, batch: Sequence[RawRecord]) -> None:
        """Apply one fetched batch and publish its outputs.

        1. The records are grouped by raw partition. Records of a partition the group no longer
           gives this worker (revoked after the fetch) or that was fenced since its last
           assignment are dropped: they are another owner's now, and taking the partition back
           would fence that owner.
        2. A partition not taken over yet is taken over (``_take_over``: its publisher first,
           which fences any previous owner, then its checkpoint is restored).
        3. A partition fetched from past where its state ends (a fetch that raced a rebalance)
           is sought back and its records dropped: they come again.
        4. The engine applies every record, each partition's in offset order.
        5. Each partition's outputs go into its open transaction. A fenced partition is let go.
        6. Each partition whose last commit is ``commit_ms`` old commits: its checkpoint and
           offset join its transaction, which is committed.

        Guarantees:
            Offsets never ahead of outputs: a partition's checkpoint and offset are committed
            only in the transaction holding the outputs of every record they cover. While a
            batch's outputs are not all sent its partitions are torn and never committed, and
            so is a partition whose commit failed; an error while sending or committing stops
            the worker with the transaction open, and the next owner aborts it.
            Exactly once: the next owner restores the last committed checkpoint and applies
            the records after it again, so a reader on ``read_committed`` sees each output
            once.
            Fencing: a fenced partition is never written again until the group assigns it
            anew; its state and unsent outputs are dropped.

        Raises:
            UnreadableCheckpointError: a partition's checkpoint cannot be restored.
            Exception: the publisher or the store failed (not fenced): the worker must stop.
        """
        async with self._lock:
            records = self._group_mine(batch)
            for partition in sorted(records):
                await self._take_over(partition)
                if await self._fetched_past_state(partition, records[partition][0].offset):
                    del records[partition]
            self.counters.batches += 1
            self._torn.update(records)
            self._apply(records)
            await self._send(self.engine.drain_partitions())
            self._torn.difference_update(records)
            await self._commit(self._due())
            self._count_dead_letters()

    def _group_mine(self, batch: Sequence[RawRecord]) -> dict[int, list[RawRecord]]:
        records: dict[int, list[RawRecord]] = {}
        for record in batch:
            records.setdefault(record.partition, []).append(record)
        mine = self.source.assignment()
        return {p: rs for p, rs in records.items() if p in mine and p not in self._fenced}

    async def _fetched_past_state(self, partition: int, first_offset: int) -> bool:
        expected = self.engine.resume_offset(partition)
        if expected is None or first_offset <= expected:
            return False
        log.info(
            "%s[%d]: fetched from offset %d, the state ends before %d: going back there",
            RAW,
            partition,
            first_offset,
            expected,
        )
        await self.source.rewind(partition, expected)
        return True

    def _apply(self, records: dict[int, list[RawRecord]]) -> None:
        for partition, rs in records.items():
            self.counters.records_in[RAW] = self.counters.records_in.get(RAW, 0) + len(rs)
            # one call per partition (into the compiled core, when it runs); a tombstone (no
            # value) is malformed here: it goes to the dead letters
            self.engine.process_many(partition, [(r.key, r.value or b"", r.offset) for r in rs])
            self._last_taken[partition] = rs[-1].offset

    async def _send(self, outputs: dict[int, list[Output]]) -> None:
        for partition, made in sorted(outputs.items()):
            try:
                await self.publisher.send(partition, made)
            except FencedError as exc:
                await self._lose(partition, exc)
                continue
            for out in made:
                self.counters.records_out[out[0]] = self.counters.records_out.get(out[0], 0) + 1

    def _count_dead_letters(self) -> None:
        if self.engine.poison:
            log.warning("%d poison record(s) sent to the dead-letter topic", self.engine.poison)
            self.counters.dead_letters += self.engine.poison
            self.engine.poison = 0

    # -- commits ----------------------------------------------------------------------------

    def _due(self) -> set[int]:
        """Owned partitions whose last commit is ``commit_ms`` old (``_commit`` skips those
        with nothing to commit)."""
        now = self._clock()
        return {
            p
            for p in self._owned
            if now - self._committed_at.get(p, -math.inf) >= self._commit_every_s
        }

    async def _commit(self, partitions: Iterable[int]) -> None:
        """Commit each partition's outputs, checkpoint and offset in one transaction. A torn
        partition is never committed (its state is ahead of its outputs); one with no new state
        and no open transaction has nothing to commit (its offset went in with its
        checkpoint).

        The partitions' transactions are independent (a producer each), so they commit
        together. A partition whose commit fails is torn until the worker stops (the error is
        raised once every commit has ended); a fenced one is let go; a cancelled ``_commit``
        tears every partition it was committing."""
        now = self._clock()
        due: list[tuple[int, bytes | None]] = []
        marks = self.engine.marks  # read once: the compiled core makes a new set each time
        for p in sorted(partitions):
            if p not in self._owned or p in self._torn:
                continue
            changed = p in marks
            if not changed and not self.publisher.in_transaction(p):
                continue
            due.append((p, self.engine.mark(p) if changed else None))
        try:
            results = await asyncio.gather(
                *(
                    self.publisher.commit(p, checkpoint, self.engine.resume_offset(p))
                    for p, checkpoint in due
                ),
                return_exceptions=True,
            )
        except BaseException:  # cancelled (a stop) while they commit: none of them is known whole
            self._torn.update(p for p, _checkpoint in due)
            raise
        failure: BaseException | None = None
        for (p, _checkpoint), result in zip(due, results, strict=True):
            if isinstance(result, FencedError):
                await self._lose(p, result)
            elif isinstance(result, BaseException):
                # The transaction may hold part of this commit (the checkpoint without the
                # offset, or neither) while the engine believes the checkpoint saved: never
                # commit it now (a stop's commit would put the offset ahead of the checkpoint).
                # The next owner aborts it.
                self._torn.add(p)
                failure = failure or result
            else:
                self._committed_at[p] = now
        if failure is not None:
            raise failure

    async def commit_quiet(self) -> None:
        """Commit what is due when no batch is running (a timer calls it every ``commit_ms``):
        after the last batch of a burst nothing else would."""
        if not self._lock.locked():
            async with self._lock:
                await self._commit(self._due())

    # -- partitions -------------------------------------------------------------------------

    async def assigned(self, partitions: Set[int]) -> None:
        """The group gives this worker ``partitions``: take each over. A fenced partition is
        this worker's again if the group says so."""
        log.info("raw partitions assigned: %s", ", ".join(map(str, sorted(partitions))) or "none")
        async with self._lock:
            self._fenced.clear()
            for p in sorted(partitions):
                await self._take_over(p)

    async def revoked(self, partitions: Set[int]) -> None:
        """``partitions`` go to another member: once the running batch is done, commit them
        and let them go, so the next owner resumes exactly here."""
        async with self._lock:
            await self._commit(partitions)
            await self._let_go(partitions)
            self._fenced.difference_update(partitions)

    async def stop(self) -> None:
        """A clean stop: commit every partition and let them go. A batch the stop cut short
        (torn) stays uncommitted: its states are ahead of its outputs, and the next owner
        aborts its transaction and applies its records again."""
        try:
            # whatever holds the lock (the timer's commit, a revocation) finishes first, so the
            # partitions are not let go under a commit in flight
            await asyncio.wait_for(self._lock.acquire(), STOP_WAIT_S)
        except TimeoutError:  # stuck on a broker that is gone: let go, commit nothing
            log.warning("stopping without a last commit: the worker was busy for %s s", STOP_WAIT_S)
            await self._let_go(set(self._owned))
            return
        try:
            await self._commit(set(self._owned))
            await self._let_go(set(self._owned))
        finally:
            self._lock.release()

    async def _take_over(self, partition: int) -> None:
        """Own ``partition``: the publisher first (which aborts and fences a previous owner's
        open transaction), then the last committed checkpoint, restored.

        Raises:
            UnreadableCheckpointError: the checkpoint is of a version this build cannot read.
        """
        if partition in self._owned:
            return
        await self.publisher.take_over(partition)
        try:
            saved = await self.checkpoints.read(partition)
            try:
                self.engine.restore(partition, saved)
            except (ValueError, TypeError, KeyError) as exc:
                why = (
                    f"the saved state of raw partition {partition} ({self.checkpoints.where}) "
                    f"cannot be read by this version ({type(exc).__name__}: {exc}); start from "
                    "empty state with `fiml up --fresh`, or delete the marks topic and rebuild "
                    "with `fiml rebuild`"
                )
                log.error("%s", why)
                raise UnreadableCheckpointError(why) from exc
        except BaseException:
            await self.publisher.release(partition)
            raise
        self._owned.add(partition)
        self._torn.discard(partition)
        log.info(
            "partition %d: resumed at offset %s",
            partition,
            self.engine.resume_offset(partition) or 0,
        )

    async def _lose(self, partition: int, exc: FencedError) -> None:
        log.warning(
            "partition %d: another worker owns it now (%s); letting it go until the "
            "next assignment",
            partition,
            type(exc.__cause__ or exc).__name__,
        )
        self._fenced.add(partition)
        await self._let_go((partition,), quiet=True)

    async def _let_go(self, partitions: Iterable[int], quiet: bool = False) -> None:
        """Drop what this worker holds of ``partitions``: its producer, its state and its
        unsent outputs. ``quiet``: a producer that fails to close (a fenced one may) is gone
        either way."""
        gone = sorted(partitions)
        for p in gone:
            if p in self._owned:
                self._owned.discard(p)
                try:
                    await self.publisher.release(p)
                except Exception:
                    if not quiet:
                        raise
                    log.debug("closing the fenced producer of partition %d", p, exc_info=True)
            self._committed_at.pop(p, None)
            self._last_taken.pop(p, None)
        self.engine.forget(gone)

    # -- what the metrics and the source read -----------------------------------------------

    def owns(self, partition: int) -> bool:
        return partition in self._owned

    def resume_offset(self, partition: int) -> int | None:
        """Where an owned partition's state ends (None: not owned, or nothing applied)."""
        return self.engine.resume_offset(partition) if partition in self._owned else None

    def lag(self) -> dict[int, int]:
        """Raw records behind the end, per partition this worker took records of."""
        out: dict[int, int] = {}
        for partition, last in list(self._last_taken.items()):
            end = self.source.end_offset(partition)
            if end is not None:
                out[partition] = max(0, end - last - 1)
        return out

    def checkpoint_age_s(self) -> dict[int, float]:
        """Seconds since each partition's last commit (what a crash would redo)."""
        now = self._clock()
        return {p: now - at for p, at in list(self._committed_at.items())}
