"""The fan-out hub: one Kafka consumer per gateway process, every partition, no group.

Each record is parsed once (to learn its channel, ``channels.route``) and its bytes, exactly as
read, are what every subscriber's data message splices in: nothing is re-serialised per client.
Dispatch runs synchronously inside the consume loop and never waits on a client; subscriptions
only note the update and wake their connection's writer.

Positions (next offset per partition) advance in the same synchronous step as dispatch, so
"every record before ``positions(topic)`` has been dispatched" holds at every await point. The
replay and resume catch-ups rely on it to hand over to live data without a gap or a duplicate.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from enum import Enum
from types import TracebackType
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from gateway.channels import Channel, route
from gateway.errors import RangeReadError, SlowClientError
from gateway.history import TopicReader
from gateway.liveness import Change, Liveness
from gateway.metrics import Metrics
from gateway.positions import epoch_of
from gateway.registry import Registry
from gateway.settings import GatewaySettings
from gateway.subscription import Positions
from schemas.topics import topic_name

__all__ = ["HEALTH", "Hub", "HubState"]

log = logging.getLogger(__name__)

#: How long the broker may hold a fetch for partitions with nothing new (aiokafka's default is
#: 500 ms). aiokafka keeps one fetch in flight per broker, and a partition whose records are
#: still buffered is left out of it; once the buffer drains, that partition waits for the
#: in-flight fetch of the idle ones (trades, health, ...) to time out. With 500 ms that wait
#: showed in the latency tail; an idle gateway now makes ~50 cheap fetches a second.
FETCH_MAX_WAIT_MS = 20
HEALTH = "fiml.provider.health"
#: Topics whose last value per channel is a snapshot (trades and raw ticks are events).
SNAPSHOT_TOPICS = ("fiml.prices", "fiml.quotes", "fiml.ohlcv")
#: Records read back at a time by the snapshot back-fill.
BACKFILL_CHUNK = 5_000
#: How long a stopping hub waits for the back-fill to finish its chunk (seconds).
BACKFILL_STOP_S = 15.0


class HubState(Enum):
    NEW = "new"
    RUNNING = "running"
    STOPPED = "stopped"
    FAILED = "failed"  # the consume loop ended on its own: the gateway serves nothing live


class Hub:
    """Reads the derived topics and dispatches each record to the registry's subscribers."""

    def __init__(self, settings: GatewaySettings, registry: Registry, metrics: Metrics) -> None:
        self._settings = settings
        self._registry = registry
        self._metrics = metrics
        self._state = HubState.NEW
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._backfill_task: asyncio.Task[None] | None = None
        #: Where the live read of each partition began (the warm window's start), and where
        #: its log began then: the snapshot back-fill reads between the two.
        self._warm_from: dict[TopicPartition, tuple[int, int]] = {}
        #: Set once the snapshot cache holds every channel's last value (``_backfill``).
        self.backfilled = asyncio.Event()
        # Physical topic names are fixed at construction: FIML_TOPIC_PREFIX applies then. The
        # providers' health is read too, for the symbols' liveness (not streamed to clients).
        followed = (*settings.topics, HEALTH)
        self._logical = {topic_name(t): t for t in followed}
        self._positions: dict[str, list[int]] = {t: [] for t in followed}
        #: Every symbol's liveness (gateway/liveness.py), and who hears of its changes.
        self.liveness = Liveness()
        self.on_status: Callable[[list[Change]], None] = lambda changes: None
        self._cache: dict[Channel, bytes] = {}
        self._assigned: set[TopicPartition] = set()
        self._cluster_id = ""  # the broker cluster's id, learned at start (epochs)
        self.ready = asyncio.Event()
        #: Set when the consume loop ends by itself (``state`` is then FAILED): ``/health`` says
        #: so and ``fiml gateway`` exits, so that a supervisor restarts it.
        self.failed = asyncio.Event()
        self.failure: str | None = None

    @property
    def state(self) -> HubState:
        return self._state

    def physical(self, logical: str) -> str:
        """The Kafka topic name of a logical one (prefix applied when the hub was built)."""
        return next(p for p, lg in self._logical.items() if lg == logical)

    def reader(self, logical: str) -> TopicReader:
        """A short-lived reader of ``logical`` (replay, resume, REST history)."""
        count = len(self._positions.get(logical, ()))
        return TopicReader(self._settings.bootstrap, self.physical(logical), count)

    def epoch(self, logical: str) -> str:
        """The epoch of ``logical``'s offsets (gateway/positions.py): it changes with the
        cluster (a broker started afresh) and the physical topic (rebuilt under a prefix)."""
        return epoch_of(self._cluster_id, self.physical(logical))

    def positions(self, logical: str) -> Positions:
        """Next offset to dispatch per partition of ``logical``; empty if not assigned yet."""
        return tuple(self._positions.get(logical, ()))

    def latest(self, channel: Channel) -> bytes | None:
        """The last record of ``channel`` (the snapshot), as JSON bytes."""
        return self._cache.get(channel)

    def lag(self) -> dict[str, int]:
        """Records between the hub's position and each topic's end, per logical topic."""
        out: dict[str, int] = {}
        if self._consumer is None:
            return out
        for tp in self._assigned:
            logical = self._logical[tp.topic]
            high = self._consumer.highwater(tp)
            pos = self._positions[logical][tp.partition]
            out[logical] = out.get(logical, 0) + (max(0, high - pos) if high is not None else 0)
        return out

    async def start(self) -> None:
        """Connect, assign every partition (starting ``warm_records`` before the end, to fill
        the snapshot cache) and start consuming.

        Raises:
            RuntimeError: the hub was started before.
            KafkaError: the broker cannot be reached.
        """
        if self._state is not HubState.NEW:
            raise RuntimeError(f"cannot start a hub that is {self._state.value}")
        self._state = HubState.RUNNING
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self._settings.bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="latest",
            isolation_level="read_committed",
            client_id="fiml-gateway-hub",
            fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
        )
        await self._consumer.start()
        try:
            # Metadata of topics created a moment ago can lag: retry briefly before serving
            # with some topics missing (the loop keeps looking for them every 2 s).
            for _ in range(25):
                if await self._assign():
                    break
                await asyncio.sleep(0.2)
        except BaseException:
            await self._consumer.stop()
            self._state = HubState.STOPPED
            raise
        self._task = asyncio.create_task(self._run(), name="fiml-gateway-hub")
        self._task.add_done_callback(self._ended)
        self._backfill_task = asyncio.create_task(self._backfill(), name="fiml-gateway-backfill")

    def _ended(self, task: asyncio.Task[None]) -> None:
        if self._state is not HubState.RUNNING:
            return  # stopped on purpose
        error = None if task.cancelled() else task.exception()
        self.failure = repr(error) if error is not None else "the consume loop ended"
        self._state = HubState.FAILED
        log.critical("hub: the consume loop died (%s): no live data is served", self.failure)
        self.failed.set()

    async def stop(self) -> None:
        """Stop consuming and close the consumer (safe to call twice)."""
        if self._state is HubState.STOPPED:
            return
        self._state = HubState.STOPPED
        if self._backfill_task is not None:
            # it stops between chunks once the state is not RUNNING: let it close its reader
            # (cancelled while its consumer starts or stops, aiokafka leaks connections)
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(asyncio.shield(self._backfill_task), BACKFILL_STOP_S)
            self._backfill_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._backfill_task
        if self._task is not None:
            self._task.cancel()
            # a loop that died (FAILED) was logged then: stopping must not raise it again
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()

    async def __aenter__(self) -> Hub:
        await self.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def _assign(self) -> bool:
        """(Re)assign every known partition; True once every topic has been found."""
        assert self._consumer is not None
        wanted: set[TopicPartition] = set()
        for physical, count in (await self._partition_counts()).items():
            wanted |= {TopicPartition(physical, p) for p in range(count)}
        new = wanted - self._assigned
        if new:
            saved = {
                tp: self._positions[self._logical[tp.topic]][tp.partition] for tp in self._assigned
            }
            self._consumer.assign(sorted(wanted))
            begin = await self._consumer.beginning_offsets(list(new))
            end = await self._consumer.end_offsets(list(new))
            for tp in new:
                saved[tp] = max(begin[tp], end[tp] - self._settings.warm_records)
                self._warm_from[tp] = (begin[tp], saved[tp])
            for tp, offset in saved.items():
                self._consumer.seek(tp, offset)
                positions = self._positions[self._logical[tp.topic]]
                positions.extend([0] * (tp.partition + 1 - len(positions)))
                positions[tp.partition] = offset
            self._assigned = wanted
        found = {tp.topic for tp in wanted}
        complete = found == set(self._logical)
        if complete:
            self.ready.set()
        return complete

    async def _backfill(self) -> None:
        """Fill the snapshot cache with what the warm window missed: a symbol quiet for longer
        than the last ``warm_records`` of its partition still has a last value, and a restarted
        gateway must know it. Each partition of the snapshot topics is read backwards in chunks
        from the warm window's start, keeping the newest record of each channel not cached yet
        (the live read only ever writes newer ones), until the log's start or
        ``backfill_records`` records. Runs once, in the background; ``backfilled`` is set at
        the end (the REST reads answer 503 rather than 404 before it)."""
        try:
            for logical in SNAPSHOT_TOPICS if self._settings.backfill_records > 0 else ():
                if logical not in self._settings.topics or self._state is not HubState.RUNNING:
                    continue
                physical = self.physical(logical)
                behind = [
                    (tp.partition, begin, warm)
                    for tp, (begin, warm) in list(self._warm_from.items())
                    if tp.topic == physical and begin < warm
                ]
                if not behind:  # the warm window held it all (no reader: see BACKFILL_STOP_S)
                    continue
                async with self.reader(logical) as reader:
                    for partition, begin, warm in behind:
                        await self._read_back(reader, logical, partition, begin, warm)
        except (KafkaError, RangeReadError) as exc:
            log.warning("hub: the snapshot back-fill stopped: %r", exc)
        finally:
            self.backfilled.set()

    async def _read_back(
        self, reader: TopicReader, logical: str, partition: int, begin: int, end: int
    ) -> None:
        """``_backfill`` of one partition: ``[begin, end)``, newest first, at most
        ``backfill_records`` of it."""
        budget = self._settings.backfill_records
        hi = end
        while hi > begin and end - hi < budget and self._state is HubState.RUNNING:
            lo = max(begin, hi - BACKFILL_CHUNK, end - budget)
            chunk = [
                m async for batch in reader.read({partition: lo}, {partition: hi}) for m in batch
            ]
            for msg in sorted(chunk, key=lambda m: m.offset, reverse=True):
                try:
                    channel, _ = route(logical, msg.value)
                except Exception:  # the live read counts and logs bad records
                    continue
                self._cache.setdefault(channel, msg.value)
            hi = lo
            await asyncio.sleep(0)  # let the live read and the clients go first

    async def _partition_counts(self) -> dict[str, int]:
        # The admin client asks the broker directly; the consumer's own metadata does not learn
        # about topics it has not been assigned yet.
        admin = AIOKafkaAdminClient(bootstrap_servers=self._settings.bootstrap)
        await admin.start()
        try:
            if not self._cluster_id:
                self._cluster_id = str((await admin.describe_cluster())["cluster_id"])
            described = await admin.describe_topics(list(self._logical))
        finally:
            await admin.close()
        return {
            t["topic"]: len(t["partitions"])
            for t in described
            if t.get("error_code") == 0 and t["partitions"]
        }

    async def _run(self) -> None:
        assert self._consumer is not None
        loop = asyncio.get_running_loop()
        complete = self.ready.is_set()
        next_check = loop.time() + 2.0
        while True:
            try:
                if not self._assigned:
                    await asyncio.sleep(0.5)
                    batches = {}
                else:
                    batches = await self._consumer.getmany(timeout_ms=200, max_records=10_000)
                if not complete and loop.time() >= next_check:
                    complete = await self._assign()
                    next_check = loop.time() + 2.0
            except KafkaError as exc:
                log.warning("hub: Kafka error, retrying in 1 s: %r", exc)
                await asyncio.sleep(1.0)
                continue
            for tp, messages in batches.items():
                try:
                    self._dispatch(tp, messages, loop.time())
                except Exception:  # a bug, not a record: log it, keep the other partitions live
                    self._metrics.hub_errors += 1
                    log.exception("hub: dispatching %s[%d] failed", tp.topic, tp.partition)

    def _dispatch(self, tp: TopicPartition, messages: list[object], now: float) -> None:
        logical = self._logical[tp.topic]
        positions = self._positions[logical]
        if logical == HEALTH:
            self._health(messages, now)
            if messages:
                positions[tp.partition] = messages[-1].offset + 1  # type: ignore[attr-defined]
            return
        cache = self._cache
        subscribers = self._registry.subscribers
        # Grouped by channel first, so that each subscriber is offered a channel's records in
        # one call: the per-subscriber cost is per channel and batch, not per record, and a
        # busy hub (bigger batches) spends less per record, not more.
        groups: dict[Channel, list[bytes]] = {}
        newest: dict[Channel, dict[str, Any]] = {}  # the last record of each channel
        for msg in messages:
            payload: bytes = msg.value  # type: ignore[attr-defined]
            try:
                channel, newest[channel] = route(logical, payload)
            except Exception as exc:  # any fault of one record is that record's
                self._metrics.decode_errors += 1
                offset: int = msg.offset  # type: ignore[attr-defined]
                log.warning("hub: skipping %s[%d]@%d: %r", tp.topic, tp.partition, offset, exc)
                continue
            group = groups.get(channel)
            if group is None:
                groups[channel] = [payload]
            else:
                group.append(payload)
        if messages:
            positions[tp.partition] = messages[-1].offset + 1  # type: ignore[attr-defined]
        for channel, payloads in groups.items():
            cache[channel] = payloads[-1]
            for sub, owner in subscribers(channel):
                if not sub.live:
                    continue
                try:
                    if sub.offer_many(channel, payloads, now):
                        owner.wake()
                except SlowClientError as exc:
                    owner.fail(exc)
                except Exception as exc:  # a bug in one subscription ends that connection only
                    log.exception("hub: subscription %s failed", sub.id)
                    owner.fail(exc)
        self._metrics.records_in[logical] = self._metrics.records_in.get(logical, 0) + len(messages)
        if logical == "fiml.prices":
            changes = []
            for (_, symbol, _), record in newest.items():
                event_ms = record.get("event_time_ms")
                change = self.liveness.on_price(
                    symbol, event_ms if isinstance(event_ms, int) else 0, now
                )
                if change is not None:
                    changes.append(change)
            if changes:
                self.on_status(changes)

    def _health(self, messages: list[object], now: float) -> None:
        """Providers' states per symbol (``fiml.provider.health``) into the liveness; records
        of a whole provider (no symbol) and unreadable ones are left out."""
        changes = []
        for msg in messages:
            try:
                record = orjson.loads(msg.value)  # type: ignore[attr-defined]
            except orjson.JSONDecodeError:
                continue
            if not isinstance(record, dict):
                continue
            symbol, provider, state = (record.get(k) for k in ("symbol", "provider", "state"))
            if isinstance(symbol, str) and isinstance(provider, str) and isinstance(state, str):
                change = self.liveness.on_health(symbol, provider, state, now)
                if change is not None:
                    changes.append(change)
        if changes:
            self.on_status(changes)
