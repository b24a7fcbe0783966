"""The ingestion producer: events in, Kafka records out, nothing lost without being counted.

``IngestProducer`` sits between the providers and aiokafka:

* ``prepare(event)`` (pure) routes each event to its topic, keys it (canonical symbol; provider
  id for health), encodes it once with ``schemas.codec`` and checks that the bytes decode back
  into a valid record with a canonical symbol. A record that fails goes to ``fiml.deadletter``
  with the reason in its headers (``agents.deadletter``), as do ``Rejected`` provider payloads.
* A bounded ``asyncio.Queue`` separates providers from the network. ``put`` waits for room
  (backpressure, for sources that can wait: simulator, replay); ``offer`` never waits and, when
  the buffer is full, drops the record, counts it and logs that it did (live feeds, where a
  fresh tick beats a stale one).
* One sender task drains the queue in batches through an idempotent, acks=all producer with a
  linger, and awaits every delivery. A failed delivery (broker down past aiokafka's own
  retries) is sent again, in order, with backoff, until it succeeds or ``stop`` gives up; what
  is given up is counted as ``failed`` and logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from types import TracebackType
from typing import Any, NamedTuple, Self

from aiokafka import AIOKafkaProducer

from agents.deadletter import DEADLETTER_TOPIC, deadletter_headers
from agents.ingest.base import Event, Rejected
from agents.ingest.errors import ProducerClosedError
from agents.ingest.simulator import TRUTH_PROVIDER
from schemas import symbols as sym
from schemas.codec import decode, encode
from schemas.errors import DecodeError, SymbolError
from schemas.records import ProviderHealth, RawTick
from schemas.topics import topic_name

__all__ = ["IngestProducer", "Outgoing", "ProducerStats", "prepare"]

log = logging.getLogger(__name__)


class Outgoing(NamedTuple):
    """One Kafka record ready to send (topic is the real, prefixed name)."""

    topic: str
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]] | None = None


@dataclass
class ProducerStats:
    """Counters for the status line and the tests: every record ends in exactly one of sent,
    deadlettered (sent to the dead-letter topic), dropped (buffer full) or failed (gave up)."""

    sent: int = 0
    deadlettered: int = 0
    dropped: int = 0
    failed: int = 0
    retried: int = 0
    buffer_full: int = 0


@lru_cache(maxsize=4096)
def _symbol_problem(symbol: str) -> str | None:
    try:
        return None if sym.normalize(symbol) == symbol else "symbol is not in canonical form"
    except SymbolError as error:
        return str(error)


def prepare(event: Event, validate: bool = True) -> Outgoing:
    """The Kafka record for ``event`` (dead-letter record if it fails validation).

    With ``validate`` the encoded bytes are decoded again: what reaches the topic is exactly
    what any consumer will parse, whatever the producer of the model did (``model_construct``).
    """
    if isinstance(event, Rejected):
        key = event.key.encode() if event.key else None
        return Outgoing(
            topic_name(DEADLETTER_TOPIC), key, event.payload,
            deadletter_headers(event.reason, event.provider),
        )  # fmt: skip
    if isinstance(event, ProviderHealth):
        logical, key_text = "fiml.provider.health", event.provider
    elif isinstance(event, RawTick):
        logical = "fiml.sim.truth" if event.provider == TRUTH_PROVIDER else "fiml.raw.ticks"
        key_text = event.symbol
    else:
        logical, key_text = "fiml.raw.trades", event.symbol
    value = encode(event)
    key = key_text.encode()
    problem = None if isinstance(event, ProviderHealth) else _symbol_problem(key_text)
    if validate and problem is None:
        try:
            decode(type(event), value)
        except DecodeError as error:
            problem = str(error)
    if problem is not None:
        reason = f"invalid {type(event).__name__}: {problem}"
        return Outgoing(
            topic_name(DEADLETTER_TOPIC), key, value, deadletter_headers(reason, event.provider)
        )
    return Outgoing(topic_name(logical), key, value)


ProducerFactory = Callable[..., Any]


class IngestProducer:
    """Idempotent, batched, bounded-buffer Kafka producer for ingestion events.

    Args:
        bootstrap: Kafka bootstrap servers.
        buffer_size: records held in memory ahead of Kafka (the bound on memory in an outage).
        linger_ms: aiokafka batching delay.
        request_timeout_ms: how long aiokafka retries a batch before failing it back to us.
        retry_backoff_ms: aiokafka's pause between its own retries.
        validate: decode every record before sending (see ``prepare``).
    """

    def __init__(
        self,
        bootstrap: str,
        *,
        buffer_size: int = 10_000,
        linger_ms: int = 10,
        request_timeout_ms: int = 30_000,
        retry_backoff_ms: int = 250,
        client_id: str = "fiml-ingest",
        validate: bool = True,
        max_batch: int = 1_000,
        producer_factory: ProducerFactory = AIOKafkaProducer,
    ) -> None:
        self.bootstrap = bootstrap
        self.validate = validate
        self.max_batch = max_batch
        self.stats = ProducerStats()
        self._queue: asyncio.Queue[Outgoing] = asyncio.Queue(maxsize=buffer_size)
        self._factory = producer_factory
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
        self._producer: Any = None
        self._sender: asyncio.Task[None] | None = None
        self._give_up_at: float | None = None
        self._in_flight: list[Outgoing] = []
        self._last_full_log = 0.0

    @property
    def queued(self) -> int:
        """Records waiting in the buffer."""
        return self._queue.qsize()

    async def start(self) -> None:
        """Connect to Kafka and start the sender task.

        Raises:
            KafkaConnectionError: (aiokafka) no broker answered at ``bootstrap``.
        """
        producer = self._factory(**self._options)
        try:
            await producer.start()
        except BaseException:
            await producer.stop()  # release the client's sockets before reporting
            raise
        self._producer = producer
        self._sender = asyncio.create_task(self._run(), name="fiml-ingest-sender")

    async def stop(self, timeout: float = 30.0) -> None:  # noqa: ASYNC109 - a drain budget
        """Deliver what is buffered (for at most ``timeout`` s), then close.

        Anything still undelivered at the deadline is counted in ``stats.failed`` and logged.
        """
        if self._producer is None:
            return
        self._give_up_at = time.monotonic() + timeout
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), timeout)
        if self._sender is not None:
            self._sender.cancel()
            await asyncio.gather(self._sender, return_exceptions=True)
        lost = self._queue.qsize() + len(self._in_flight)
        if lost:
            self.stats.failed += lost
            log.error("ingest producer stopped with %d undelivered record(s)", lost)
        producer, self._producer = self._producer, None
        await producer.stop()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:  # fmt: skip
        await self.stop()

    def _check_open(self) -> None:
        if self._producer is None or self._give_up_at is not None:
            raise ProducerClosedError("the ingest producer is not running")

    async def put(self, event: Event) -> None:
        """Queue ``event``, waiting for room when the buffer is full (backpressure).

        Raises:
            ProducerClosedError: the producer is not running.
        """
        self._check_open()
        out = prepare(event, self.validate)
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
            self._queue.put_nowait(prepare(event, self.validate))
        except asyncio.QueueFull:
            self.stats.dropped += 1
            self.stats.buffer_full += 1
            self._log_full(f"dropped a record ({self.stats.dropped} so far)", logging.WARNING)
            return False
        return True

    async def flush(self) -> None:
        """Wait until everything queued so far is delivered (or given up)."""
        await self._queue.join()

    def _log_full(self, what: str, level: int) -> None:
        # Backpressure is normal at full speed (INFO); a drop loses data (WARNING). Either is
        # said at most every 5 s, not 10k times a second; the counters have the exact numbers.
        now = time.monotonic()
        if now - self._last_full_log >= 5.0:
            self._last_full_log = now
            log.log(level, "ingest buffer full (%d records): %s", self._queue.maxsize, what)

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
        pending = batch
        attempt = 0
        while pending:
            self._in_flight = pending
            futures: list[asyncio.Future[Any]] = []
            unsent: list[Outgoing] = []
            for index, out in enumerate(pending):
                try:
                    futures.append(
                        await self._producer.send(
                            out.topic, out.value, key=out.key, headers=out.headers
                        )
                    )
                except Exception as error:  # aiokafka: KafkaTimeoutError, KafkaError ...
                    log.warning("send to %s failed (%s); will retry", out.topic, error)
                    unsent = pending[index:]  # keep order: nothing after it goes ahead
                    break
            results = await asyncio.gather(*futures, return_exceptions=True)
            failed = [
                out
                for out, res in zip(pending, results, strict=False)
                if isinstance(res, BaseException)
            ]
            for out, res in zip(pending, results, strict=False):
                if not isinstance(res, BaseException):
                    self._count_sent(out)
                elif attempt == 0:
                    log.warning("delivery to %s failed (%s); will retry", out.topic, res)
            pending = failed + unsent
            self._in_flight = pending
            if not pending:
                return
            if self._give_up_at is not None and time.monotonic() >= self._give_up_at:
                self.stats.failed += len(pending)
                self._in_flight = []
                log.error("gave up on %d record(s) at shutdown", len(pending))
                return
            self.stats.retried += len(pending)
            attempt += 1
            await asyncio.sleep(min(5.0, 0.2 * 2**attempt))

    def _count_sent(self, out: Outgoing) -> None:
        if out.headers is not None:
            self.stats.deadlettered += 1
        else:
            self.stats.sent += 1
