"""What ``fiml up``'s status screen shows, measured from outside the children.

Rates come from Kafka end offsets (what actually reached the log, whoever wrote it), clients
from the gateway's ``GET /ws/connections``, provider health from ``fiml.provider.health``.
Nothing here asks a child about itself, so a hung child shows as a rate that drops to zero.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from types import TracebackType

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from infra.topics import describe_topics
from schemas.codec import decode
from schemas.errors import DecodeError
from schemas.records import ProviderHealth
from schemas.topics import TOPICS, topic_name

__all__ = ["Monitor", "RateMeter", "Snapshot"]


@dataclass
class RateMeter:
    """Records per second between two readings of a growing total (pure)."""

    last_total: int | None = None
    last_time: float = 0.0
    rate: float = 0.0

    def update(self, total: int, now: float) -> float:
        if self.last_total is not None and now > self.last_time:
            self.rate = max(0, total - self.last_total) / (now - self.last_time)
        self.last_total, self.last_time = total, now
        return self.rate


@dataclass
class Snapshot:
    bootstrap: str
    broker_up: bool = False
    topics: int = 0
    ticks_total: int = 0
    prices_total: int = 0  # committed prices read since the monitor started
    ticks_per_s: float = 0.0
    prices_per_s: float = 0.0
    clients: int | None = None  # None: the gateway did not answer
    providers: dict[str, ProviderHealth] = field(default_factory=dict)


class Monitor:
    """Samples the pipeline; use as ``async with Monitor(...) as m: snap = await m.sample()``."""

    def __init__(self, bootstrap: str, gateway_url: str) -> None:
        self.bootstrap = bootstrap
        self._gateway_url = gateway_url.rstrip("/")
        self._names = {lg: topic_name(lg) for lg in TOPICS}
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
            client_id="fiml-up-monitor", auto_offset_reset="earliest",
            isolation_level="read_committed",
        )  # fmt: skip
        self._http = httpx.AsyncClient(timeout=2.0)
        self._parts: dict[str, list[TopicPartition]] = {}
        self._ticks = RateMeter()
        self._prices = RateMeter()
        self._health: dict[str, ProviderHealth] = {}
        self._prices_read = 0

    async def __aenter__(self) -> Monitor:
        """Raises: KafkaError: the broker cannot be reached."""
        await self._consumer.start()
        info = await describe_topics(self.bootstrap, self._names.values())
        for logical, name in self._names.items():
            if name in info:
                self._parts[logical] = [
                    TopicPartition(name, p) for p in range(info[name].partitions)
                ]
        # Prices are counted as they are read, not from end offsets: the worker writes in
        # transactions, and every commit puts a marker (an offset, no record) in each partition.
        health = self._parts.get("fiml.provider.health", [])
        prices = self._parts.get("fiml.prices", [])
        if health or prices:
            self._consumer.assign(health + prices)
            if health:
                await self._consumer.seek_to_beginning(*health)
            if prices:
                await self._consumer.seek_to_end(*prices)
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._http.aclose()
        await self._consumer.stop()

    async def _total(self, logical: str) -> int:
        parts = self._parts.get(logical, [])
        if not parts:
            return 0
        ends = await self._consumer.end_offsets(parts)
        return sum(ends.values())

    async def _read(self) -> None:
        """Provider health records, and a count of the prices committed since the start."""
        batches = await self._consumer.getmany(timeout_ms=0, max_records=20_000)
        prices = self._names["fiml.prices"]
        for tp, messages in batches.items():
            if tp.topic == prices:
                self._prices_read += len(messages)
                continue
            for m in messages:
                with contextlib.suppress(DecodeError):
                    record = decode(ProviderHealth, m.value)
                    self._health[record.provider] = record

    async def _clients(self) -> int | None:
        try:
            response = await self._http.get(f"{self._gateway_url}/ws/connections")
            response.raise_for_status()
            return int(response.json()["active_connections"])
        except (httpx.HTTPError, KeyError, ValueError):
            return None

    async def sample(self) -> Snapshot:
        """One reading; a broker that stopped answering shows as ``broker_up=False``."""
        snap = Snapshot(self.bootstrap, topics=len(self._parts))
        now = time.monotonic()
        try:
            snap.ticks_total = await self._total("fiml.raw")
            await self._read()
            snap.prices_total = self._prices_read
            snap.broker_up = True
        except KafkaError:
            snap.broker_up = False
        snap.ticks_per_s = self._ticks.update(snap.ticks_total, now)
        snap.prices_per_s = self._prices.update(snap.prices_total, now)
        snap.clients = await self._clients()
        snap.providers = dict(self._health)
        return snap
