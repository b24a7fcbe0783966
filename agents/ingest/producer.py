"""The ingestion producer: events in, Kafka records out, nothing lost without being counted.

``IngestProducer`` sits between the providers and aiokafka:

* ``prepare(event)`` (pure, ``agents.ingest.routing``) gives each event its topic, key and
  encoded value, or sends it to ``fiml.deadletter`` with the reason.
* A bounded ``asyncio.Queue`` separates providers from the network. ``put`` waits for room
  (backpressure, for sources that can wait: simulator, replay); ``offer`` never waits and, when
  the buffer is full, drops the record, counts it and logs that it did (live feeds, where a
  fresh tick beats a stale one).
* One sender task drains the queue in batches through an idempotent, acks=all aiokafka
  producer with a linger, and awaits every delivery. A broker outage is ridden out by aiokafka
  itself: with idempotence it keeps retrying each batch under the same producer id and
  sequence number, so a batch the broker had in fact written is recognised as a duplicate and
  not written twice, and a partition's batches stay in order. We never re-send a record
  aiokafka has accepted.
* When aiokafka does give up on a record (``send`` times out after ``request_timeout_ms``, or a
  delivery fails: e.g. a batch expired while its partition had no leader), that record is
  counted in ``stats.failed`` and logged with its topic, and the aiokafka client is replaced by
  a fresh one (new producer id) before anything else is sent: a failed batch leaves a gap in
  the partition's sequence numbers that would make the broker refuse every later batch from
  the old producer id (``OutOfOrderSequenceNumber``), i.e. the producer would never recover.

The Kafka client is a seam (``KafkaClient``, ``client_factory``): tests pass an in-memory fake,
as httpx tests pass a transport.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from types import TracebackType
from typing import Any, Protocol, Self

from aiokafka import AIOKafkaProducer
from aiokafka.errors import MessageSizeTooLargeError

from agents.ingest.base import Event
from agents.ingest.errors import ProducerClosedError
from agents.ingest.routing import Outgoing, is_deadletter, prepare
from agents.timebounds import TimeBounds

__all__ = [
    "ClientFactory",
    "IngestProducer",
    "KafkaClient",
    "Outgoing",
    "ProducerStats",
    "prepare",
]

log = logging.getLogger(__name__)

# send() errors that a fresh client would raise again: the record fails, the client is fine.
_RECORD_ERRORS = (MessageSizeTooLargeError, TypeError, ValueError)


class KafkaClient(Protocol):
    """What ``IngestProducer`` uses of ``aiokafka.AIOKafkaProducer`` (the seam for tests)."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def send(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        *,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> asyncio.Future[Any]: ...


ClientFactory = Callable[..., KafkaClient]
"""Called with aiokafka producer keyword options; returns a not yet started client."""


@dataclass
class ProducerStats:
    """Counters for the status line and the tests: every record ends in exactly one of sent,
    deadlettered (sent to the dead-letter topic), dropped (buffer full) or failed (aiokafka gave
    up, or still undelivered when ``stop`` ran out of time)."""

    sent: int = 0
    deadlettered: int = 0
    dropped: int = 0
    failed: int = 0
    buffer_full: int = 0  # times a record met a full buffer (waited in put, dropped in offer)
    reconnects: int = 0  # times the Kafka client was replaced after aiokafka gave up


class _State(Enum):
    IDLE = "idle"
    RUNNING = "running"
    CLOSING = "closing"
    CLOSED = "closed"


class IngestProducer:
    """Idempotent, batched, bounded-buffer Kafka producer for ingestion events.

    Args:
        bootstrap: Kafka bootstrap servers.
        buffer_size: records held in memory ahead of Kafka (the bound on memory in an outage;
            aiokafka holds at most ``max_batch`` more).
        linger_ms: aiokafka batching delay.
        request_timeout_ms: how long aiokafka keeps a record before giving up on it: waiting
            for metadata or room in ``send``, a batch whose partition has no leader, a request
            to a broker that does not answer. An outage shorter than this loses nothing.
        retry_backoff_ms: aiokafka's pause between its own retries.
        reconnect_backoff: first and longest pause (s) between attempts to start a new client.
        validate: decode every record before sending (see ``prepare``).
        bounds: how far event times may be from ingest times (default: from the environment,
            ``agents.timebounds``); records outside them go to the dead letters.
        max_batch: records handed to aiokafka before waiting for their delivery.
        client_factory: makes the Kafka client (default ``AIOKafkaProducer``).
    """

    def __init__(
        self,
        bootstrap: str,
        *,
        buffer_size: int = 10_000,
        linger_ms: int = 10,
        request_timeout_ms: int = 300_000,
        retry_backoff_ms: int = 250,
        reconnect_backoff: tuple[float, float] = (0.5, 10.0),
        client_id: str = "fiml-ingest",
        validate: bool = True,
        bounds: TimeBounds | None = None,
        max_batch: int = 1_000,
        client_factory: ClientFactory = AIOKafkaProducer,
    ) -> None:
        self.bootstrap = bootstrap
        self.validate = validate
        self.bounds = bounds if bounds is not None else TimeBounds.from_env()
        self.max_batch = max_batch
        self.reconnect_backoff = reconnect_backoff
        self.stats = ProducerStats()
        self._queue: asyncio.Queue[Outgoing] = asyncio.Queue(maxsize=buffer_size)
        self._factory = client_factory
        self._options: dict[str, Any] = {
            "bootstrap_servers": bootstrap,
            "client_id": client_id,
            "acks": "all",
            "enable_idempotence": True,
            "linger_ms": linger_ms,
            "request_timeout_ms": request_timeout_ms,
            "retry_backoff_ms": retry_backoff_ms,
            "max_batch_size": 256 * 1024,
        }
        self._state = _State.IDLE
        self._client: KafkaClient | None = None
        self._sender: asyncio.Task[None] | None = None
        self._unsent: deque[Outgoing] = deque()  # taken from the queue, not yet in aiokafka
        self._handed: list[tuple[Outgoing, asyncio.Future[Any]]] = []  # in aiokafka
        self._last_full_log = 0.0

    @property
    def queued(self) -> int:
        """Records waiting in the buffer."""
        return self._queue.qsize()

    # --- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect to Kafka and start the sender task.

        Raises:
            ProducerClosedError: already started (or stopped: a producer runs once).
            KafkaConnectionError: (aiokafka) no broker answered at ``bootstrap``.
        """
        if self._state is not _State.IDLE:
            raise ProducerClosedError(f"the ingest producer is {self._state.value}")
        self._client = await self._open_client()
        self._state = _State.RUNNING
        self._sender = asyncio.create_task(self._run(), name="fiml-ingest-sender")

    async def stop(self, timeout: float = 30.0) -> None:  # noqa: ASYNC109 - a drain budget
        """Deliver what is buffered (for at most about ``timeout`` s), then close.

        Anything not confirmed delivered by then is counted in ``stats.failed`` and logged. If
        the broker is still unreachable at the deadline the aiokafka client cannot finish
        closing (it retries its batches until they are delivered); it is then abandoned to the
        event loop's shutdown, and its records are counted as failed.
        """
        if self._state is not _State.RUNNING:
            return
        self._state = _State.CLOSING
        deadline = time.monotonic() + timeout
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), timeout)
        if self._sender is not None:
            self._sender.cancel()
            await asyncio.gather(self._sender, return_exceptions=True)
        client, self._client = self._client, None
        if client is not None:
            await self._close_client(client, max(deadline - time.monotonic(), 1.0))
        self._settle()  # what aiokafka delivered while closing counts as sent
        lost = self._queue.qsize() + len(self._unsent)
        if lost:
            self._fail(lost, "not delivered when the producer stopped")
        self._unsent.clear()
        self._state = _State.CLOSED

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:  # fmt: skip
        await self.stop()

    # --- input ------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._state is not _State.RUNNING:
            raise ProducerClosedError(f"the ingest producer is {self._state.value}")

    async def put(self, event: Event) -> None:
        """Queue ``event``, waiting for room when the buffer is full (backpressure).

        Raises:
            ProducerClosedError: the producer is not running.
        """
        self._check_open()
        out = prepare(event, self.validate, self.bounds)
        if self._queue.full():
            self.stats.buffer_full += 1
            self._log_full("waiting for room (backpressure)", logging.INFO)
        await self._queue.put(out)

    def offer(self, event: Event) -> bool:
        """Queue ``event`` without waiting; False (counted in ``stats.dropped``) if full.

        Raises:
            ProducerClosedError: the producer is not running.
        """
        self._check_open()
        try:
            self._queue.put_nowait(prepare(event, self.validate, self.bounds))
        except asyncio.QueueFull:
            self.stats.dropped += 1
            self.stats.buffer_full += 1
            self._log_full(f"dropped a record ({self.stats.dropped} so far)", logging.WARNING)
            return False
        return True

    async def flush(self) -> None:
        """Wait until everything queued so far is delivered (or given up and counted)."""
        await self._queue.join()

    def _log_full(self, what: str, level: int) -> None:
        # Backpressure is normal at full speed (INFO); a drop loses data (WARNING). Either is
        # said at most every 5 s, not 10k times a second; the counters have the exact numbers.
        now = time.monotonic()
        if now - self._last_full_log >= 5.0:
            self._last_full_log = now
            log.log(level, "ingest buffer full (%d records): %s", self._queue.maxsize, what)

    # --- the sender task --------------------------------------------------------------------

    async def _run(self) -> None:
        queue = self._queue
        while True:
            batch = [await queue.get()]
            while len(batch) < self.max_batch and not queue.empty():
                batch.append(queue.get_nowait())
            try:
                await self._deliver(batch)
            finally:
                for _ in batch:
                    queue.task_done()

    async def _deliver(self, batch: list[Outgoing]) -> None:
        """Hand ``batch`` to aiokafka in order and wait for every delivery.

        A record is handed over exactly once. If aiokafka refuses one (``send`` raises) the
        rest waits until the client has been replaced, so that a partition keeps its order.
        """
        unsent = self._unsent = deque(batch)
        while unsent:
            client = self._client or await self._reconnect()
            broken = False
            while unsent and not broken:
                out = unsent[0]
                try:
                    future = await client.send(
                        out.topic, out.value, key=out.key, headers=out.headers
                    )
                except Exception as error:  # aiokafka gave up on this record
                    unsent.popleft()
                    self._fail(1, f"{out.topic}: send refused: {type(error).__name__}: {error}")
                    broken = not isinstance(error, _RECORD_ERRORS)
                    continue
                unsent.popleft()
                self._handed.append((out, future))
            if self._handed:
                await asyncio.wait([future for _, future in self._handed])
            if self._settle() or broken:
                await self._drop_client()

    def _settle(self) -> bool:
        """Count the finished deliveries handed to aiokafka; True if any failed."""
        failures: Counter[tuple[str, str]] = Counter()
        waiting = []
        for out, future in self._handed:
            if not future.done():
                waiting.append((out, future))
            elif future.cancelled() or future.exception() is not None:
                error = "cancelled" if future.cancelled() else repr(future.exception())
                failures[(out.topic, error)] += 1
            elif is_deadletter(out):
                self.stats.deadlettered += 1
            else:
                self.stats.sent += 1
        for out, _ in waiting:
            failures[(out.topic, "not confirmed when the producer stopped")] += 1
        self._handed = []
        for (topic, error), count in failures.items():
            self._fail(count, f"{topic}: delivery failed: {error}")
        return bool(failures)

    def _fail(self, count: int, why: str) -> None:
        self.stats.failed += count
        log.error("ingest producer gave up on %d record(s): %s", count, why)

    # --- the Kafka client -------------------------------------------------------------------

    async def _open_client(self) -> KafkaClient:
        client = self._factory(**self._options)
        try:
            await client.start()
        except BaseException:
            await client.stop()  # release the client's sockets before reporting
            raise
        return client

    async def _close_client(self, client: KafkaClient, budget: float) -> None:
        try:
            await asyncio.wait_for(client.stop(), budget)
        except TimeoutError:
            log.error(
                "kafka client at %s did not close within %.1f s (broker unreachable?); "
                "abandoning it", self.bootstrap, budget,
            )  # fmt: skip
        except Exception as error:
            log.warning("closing the kafka client failed: %s", error)

    async def _drop_client(self) -> None:
        """Retire the current client (nothing of ours is pending in it any more)."""
        client, self._client = self._client, None
        if client is not None:
            await self._close_client(client, 10.0)

    async def _reconnect(self) -> KafkaClient:
        """A fresh client (new producer id), trying until a broker answers."""
        first, cap = self.reconnect_backoff
        attempt = 0
        while True:
            try:
                self._client = await self._open_client()
            except Exception as error:
                delay = min(cap, first * 2 ** min(attempt, 10))
                attempt += 1
                log.warning(
                    "kafka at %s unreachable (%s); new client in %.1f s (%d queued)",
                    self.bootstrap, error, delay, self._queue.qsize(),
                )  # fmt: skip
                await asyncio.sleep(delay)
                continue
            self.stats.reconnects += 1
            log.warning("ingest producer reconnected to kafka at %s", self.bootstrap)
            return self._client
