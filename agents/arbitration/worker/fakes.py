"""In-memory fakes of the worker's three ports, with the faults the worker must survive.

``FakeBroker`` is what outlives a worker, as a Kafka cluster does: the raw log, and per raw
partition the committed outputs, checkpoint and group offset, plus the transaction each
partition's current producer has open. ``FakeSource``, ``FakePublisher`` and
``FakeCheckpointStore`` are one worker's view of it; a restarted worker gets new ones over the
same broker.

Faults: a publish that fails mid-way (``FakeBroker.fail_at``: the n-th step of writing, an
output or a stage of a commit, raises ``PublishFailed``), a fenced producer
(``FakeBroker.fence``, or ``fence_at`` a step), a rebalance mid-batch (``FakeSource.fetch``'s
``revoke_mid_batch`` and ``revoke_after_fetch``), a fetch that lost records
(``FakeSource.skip``) and a checkpoint that cannot be read (``FakeBroker.checkpoints`` set to
anything, or ``unreachable``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence, Set
from dataclasses import dataclass, field

from agents.arbitration.core.processor import Output
from agents.arbitration.worker.errors import FencedError
from agents.arbitration.worker.ports import SourceEvents

__all__ = [
    "Commit",
    "FakeBroker",
    "FakeCheckpointStore",
    "FakePublisher",
    "FakeSource",
    "PublishFailed",
    "Record",
]


class PublishFailed(Exception):
    """An injected failure while writing: a broker out of reach past the retries."""


@dataclass(frozen=True, slots=True)
class Record:
    """A raw record as fetched (``RawRecord``)."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass(frozen=True, slots=True)
class Commit:
    """One committed transaction of a raw partition, as readers see it."""

    partition: int
    outputs: tuple[Output, ...]
    checkpoint: bytes | None
    next_offset: int | None


@dataclass
class _Transaction:
    epoch: int
    outputs: list[Output] = field(default_factory=list)
    checkpoint: bytes | None = None
    next_offset: int | None = None


@dataclass
class FakeBroker:
    """The state that survives a worker: the raw log (partition -> (key, value) in offset
    order) and, per raw partition, what was committed and what is open."""

    raw: dict[int, list[tuple[bytes | None, bytes]]]
    #: committed outputs per raw partition, in commit order
    outputs: dict[int, list[Output]] = field(default_factory=dict)
    checkpoints: dict[int, bytes] = field(default_factory=dict)
    offsets: dict[int, int] = field(default_factory=dict)  # the group's committed offsets
    commits: list[Commit] = field(default_factory=list)
    #: the steps of writing (each output sent, each stage of a commit) that fail, counted from 0
    fail_at: set[int] = field(default_factory=set)
    steps: int = 0
    #: step -> the partition another producer takes over just before that step
    fence_at: dict[int, int] = field(default_factory=dict)
    unreachable: set[int] = field(default_factory=set)  # partitions whose checkpoint read fails
    epochs: dict[int, int] = field(default_factory=dict)  # the producer epoch per partition
    open_transactions: dict[int, _Transaction] = field(default_factory=dict)

    def step(self) -> None:
        """Count one step of writing; raise if it is one that fails."""
        n, self.steps = self.steps, self.steps + 1
        if n in self.fence_at:
            self.fence(self.fence_at[n])
        if n in self.fail_at:
            raise PublishFailed(f"injected failure at step {n}")

    def fence(self, partition: int) -> None:
        """Another producer takes ``partition``'s transactional id over: the current one's open
        transaction is aborted and its next send or commit fails."""
        self.new_epoch(partition)

    def new_epoch(self, partition: int) -> int:
        epoch = self.epochs[partition] = self.epochs.get(partition, 0) + 1
        self.open_transactions.pop(partition, None)  # aborted: never visible
        return epoch


class FakePublisher:
    """The ``Publisher`` port over a ``FakeBroker``: commits are atomic, as Kafka's."""

    def __init__(self, broker: FakeBroker) -> None:
        self.broker = broker
        self._epochs: dict[int, int] = {}  # partition -> the epoch this producer holds
        self.released: list[int] = []

    async def take_over(self, partition: int) -> None:
        await asyncio.sleep(0)
        self._epochs[partition] = self.broker.new_epoch(partition)

    async def send(self, partition: int, outputs: Sequence[Output]) -> None:
        txn = await self._transaction(partition)
        for out in outputs:
            self.broker.step()  # a failure here leaves part of the outputs in the transaction
            txn.outputs.append(out)

    def in_transaction(self, partition: int) -> bool:
        txn = self.broker.open_transactions.get(partition)
        return txn is not None and txn.epoch == self._epochs.get(partition)

    async def commit(
        self, partition: int, checkpoint: bytes | None, next_offset: int | None
    ) -> None:
        txn = await self._transaction(partition)
        broker = self.broker
        broker.step()
        if checkpoint is not None:
            txn.checkpoint = checkpoint
        broker.step()
        txn.next_offset = next_offset
        broker.step()
        self._check_epoch(partition)  # fenced meanwhile: the commit fails, as Kafka's does
        del broker.open_transactions[partition]  # committed: outputs, checkpoint and offset at once
        broker.outputs.setdefault(partition, []).extend(txn.outputs)
        if txn.checkpoint is not None:
            broker.checkpoints[partition] = txn.checkpoint
        if txn.next_offset is not None:
            broker.offsets[partition] = txn.next_offset
        broker.commits.append(
            Commit(partition, tuple(txn.outputs), txn.checkpoint, txn.next_offset)
        )

    async def release(self, partition: int) -> None:
        await asyncio.sleep(0)
        self._epochs.pop(partition, None)
        self.released.append(partition)

    async def _transaction(self, partition: int) -> _Transaction:
        """The open transaction of ``partition`` (begun if none is).

        Raises:
            FencedError: another producer took the partition over since this one did.
        """
        await asyncio.sleep(0)  # I/O: another task may run here
        mine = self._check_epoch(partition)
        txn = self.broker.open_transactions.get(partition)
        if txn is None:
            txn = self.broker.open_transactions[partition] = _Transaction(mine)
        return txn

    def _check_epoch(self, partition: int) -> int:
        mine = self._epochs.get(partition)
        if mine is None or mine != self.broker.epochs.get(partition):
            raise FencedError(partition, "ProducerFenced")
        return mine


class FakeCheckpointStore:
    """The ``CheckpointStore`` port over a ``FakeBroker``."""

    def __init__(self, broker: FakeBroker, where: str = "fake-marks") -> None:
        self.broker = broker
        self.where = where

    async def read(self, partition: int) -> bytes | None:
        await asyncio.sleep(0)
        if partition in self.broker.unreachable:
            raise TimeoutError(f"the checkpoint of partition {partition} could not be read")
        return self.broker.checkpoints.get(partition)


class FakeSource:
    """The ``BatchSource`` port over a ``FakeBroker``'s raw log: one group member, assigned
    partitions start at the group's committed offsets."""

    def __init__(self, broker: FakeBroker) -> None:
        self.broker = broker
        self._events: SourceEvents | None = None
        self._positions: dict[int, int] = {}
        self.rewinds: list[tuple[int, int]] = []

    def feed(self, events: SourceEvents) -> None:
        self._events = events

    @property
    def events(self) -> SourceEvents:
        if self._events is None:
            raise RuntimeError("feed the source a worker first")
        return self._events

    def assignment(self) -> set[int]:
        return set(self._positions)

    async def rewind(self, partition: int, offset: int) -> None:
        await asyncio.sleep(0)
        self.rewinds.append((partition, offset))
        if partition in self._positions:
            self._positions[partition] = offset

    def end_offset(self, partition: int) -> int | None:
        return len(self.broker.raw.get(partition, ()))

    async def assign(self, partitions: Set[int]) -> None:
        """The group gives this member ``partitions`` (each from its committed offset)."""
        for p in partitions:
            self._positions[p] = self.broker.offsets.get(p, 0)
        await self.events.assigned(partitions)

    async def revoke(self, partitions: Set[int]) -> None:
        """The group takes ``partitions`` away."""
        for p in partitions:
            self._positions.pop(p, None)
        await self.events.revoked(partitions)

    def skip(self, partition: int, records: int) -> None:
        """Lose ``records`` of ``partition``: the position moves past them, never fetched (as a
        fetch that a rebalance interrupted was dropped inside Faust)."""
        self._positions[partition] += records

    def pending(self) -> int:
        """Records of the assigned partitions not fetched yet."""
        return sum(len(self.broker.raw[p]) - pos for p, pos in self._positions.items())

    async def fetch(
        self,
        records: int,
        *,
        revoke_after_fetch: Set[int] = frozenset(),
        revoke_mid_batch: Set[int] = frozenset(),
    ) -> list[Record]:
        """Fetch up to ``records`` records of each assigned partition and hand them to the
        worker as one batch; the batch.

        ``revoke_after_fetch``: the group takes these partitions away after the fetch and before
        the worker has the batch. ``revoke_mid_batch``: while the worker handles the batch.
        """
        batch: list[Record] = []
        for p in sorted(self._positions):
            start = self._positions[p]
            for offset in range(start, min(start + records, len(self.broker.raw[p]))):
                key, value = self.broker.raw[p][offset]
                batch.append(Record(p, offset, key, value))
            self._positions[p] = max(start, min(start + records, len(self.broker.raw[p])))
        if revoke_after_fetch:
            await self.revoke(revoke_after_fetch)
        if not revoke_mid_batch:
            await self.events.handle(batch)
            return batch
        handling = asyncio.create_task(self.events.handle(batch))
        await asyncio.sleep(0)  # the batch is under way
        await self.revoke(revoke_mid_batch)
        await handling
        return batch
