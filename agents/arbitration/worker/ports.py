"""The three ports the worker runs on, and the record it reads.

Each is a small typing Protocol with an in-memory fake (``fakes.py``) and a Kafka adapter
(``faust_adapter.py``: the batch source; ``transactions.py``: the publisher and the checkpoint
store). The worker (``worker.py``) knows only these.
"""

from __future__ import annotations

from collections.abc import Sequence, Set
from typing import Protocol

from agents.arbitration.core.processor import Output

__all__ = ["BatchSource", "CheckpointStore", "Publisher", "RawRecord", "SourceEvents"]


class RawRecord(Protocol):
    """One record of ``fiml.raw`` as fetched (a Faust ``Message`` is one)."""

    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...


class SourceEvents(Protocol):
    """What a batch source tells its worker (``ArbitrationWorker`` is one), one call at a time:
    each fetch, and each change of the partitions the group gives this member."""

    async def handle(self, batch: Sequence[RawRecord]) -> None: ...
    async def assigned(self, partitions: Set[int]) -> None: ...
    async def revoked(self, partitions: Set[int]) -> None: ...
    def resume_offset(self, partition: int) -> int | None:
        """Where an owned partition's state ends: the source's first record of it after an
        assignment must be this one (None: no opinion)."""
        ...


class BatchSource(Protocol):
    """The raw topic as one member of a consumer group reads it.

    The source drives: from ``feed`` on it hands every fetched batch (records of several
    partitions, each partition's in offset order) and every assignment and revocation to
    ``events``, awaiting each. The worker asks it back which partitions are assigned now, and
    to go back to where a partition's state ends."""

    def feed(self, events: SourceEvents) -> None: ...

    def assignment(self) -> Set[int]:
        """The raw partitions the group gives this member now."""
        ...

    async def rewind(self, partition: int, offset: int) -> None:
        """Fetch ``partition`` from ``offset`` again (records already fetched after it come
        again)."""
        ...

    def end_offset(self, partition: int) -> int | None:
        """The partition's end as last seen (None: not known yet); for the lag metric."""
        ...


class Publisher(Protocol):
    """One transaction per raw partition: its outputs, its checkpoint and its consumed offset
    become visible together or not at all.

    Raises (every method that writes):
        FencedError: another producer owns the partition now (a newer owner took it over).
            Nothing this publisher wrote for it since its last commit will ever be visible.
        Exception: any other failure (a broker gone past the retries); the open transaction
            is left to the next owner, who aborts it.
    """

    async def take_over(self, partition: int) -> None:
        """Become the partition's only writer: abort what a previous owner left open and
        fence it. Before the partition's checkpoint is read."""
        ...

    async def send(self, partition: int, outputs: Sequence[Output]) -> None:
        """Write ``outputs`` into the partition's open transaction (one is begun if none is)
        and wait until the broker has them; invisible to readers until ``commit``."""
        ...

    def in_transaction(self, partition: int) -> bool:
        """Whether the partition has a transaction open (outputs sent, not committed)."""
        ...

    async def commit(
        self, partition: int, checkpoint: bytes | None, next_offset: int | None
    ) -> None:
        """Add the checkpoint (None: unchanged) and the consumer offset (the first raw record
        not applied; None: none applied yet) to the transaction and commit it."""
        ...

    async def release(self, partition: int) -> None:
        """Close the partition's producer; an open transaction is left to the next owner."""
        ...


class CheckpointStore(Protocol):
    """Where each raw partition's last committed checkpoint is read back from."""

    #: Where the checkpoints are (the marks topic), for messages to an operator.
    where: str

    async def read(self, partition: int) -> bytes | None:
        """The partition's last committed checkpoint, None if it has none.

        Raises:
            Exception: it cannot be read (a broker out of reach, a timeout).
        """
        ...
