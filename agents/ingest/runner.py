"""Runs providers into the producer, each in its own task, so one failing provider never stops
the others; and the one-call entry points that ``fiml up`` and the tests use.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from agents.ingest.base import Provider, wall_clock_ms
from agents.ingest.producer import IngestProducer, ProducerStats
from agents.ingest.simconfig import DEFAULT_SYMBOLS, SimConfig
from agents.ingest.simulator import SimulatorProvider
from schemas.records import ProviderHealth

__all__ = ["IngestRunner", "ProviderStatus", "run_providers", "run_simulation"]

log = logging.getLogger(__name__)


@dataclass
class ProviderStatus:
    """One provider's line of the status display."""

    name: str
    state: str
    reason: str | None
    events: int
    errors: int
    rate: float = 0.0  # events per second since the previous snapshot


@dataclass
class _Meter:
    last_count: int = 0
    last_time: float = field(default_factory=time.monotonic)


class IngestRunner:
    """Pumps every provider's events into one ``IngestProducer``.

    A provider that raises is reported ``down`` on ``fiml.provider.health`` with the error as
    the reason; the others keep running. Lossless providers (simulator, replay) wait for room
    in the producer's buffer; live ones are dropped-and-counted when it is full.
    """

    def __init__(self, producer: IngestProducer, providers: Sequence[Provider]) -> None:
        self.producer = producer
        self.providers = list(providers)
        self._tasks: list[asyncio.Task[None]] = []
        self._meters = {p.name: _Meter() for p in self.providers}

    async def _pump(self, provider: Provider) -> None:
        try:
            async with provider:
                async for event in provider:
                    if provider.lossless:
                        await self.producer.put(event)
                    else:
                        self.producer.offer(event)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            provider.errors += 1
            reason = f"provider crashed: {type(error).__name__}: {error}"
            log.error("%s: %s", provider.name, reason)
            provider.reason = reason
            self.producer.offer(
                ProviderHealth(
                    provider=provider.name, state="down", reason=reason,
                    event_time_ms=wall_clock_ms(), ticks=provider.ticks + provider.trades,
                    errors=provider.errors,
                )
            )  # fmt: skip

    def start(self) -> None:
        """Start one task per provider (the producer must already be started)."""
        self._tasks = [
            asyncio.create_task(self._pump(p), name=f"ingest-{p.name}") for p in self.providers
        ]

    async def wait(self) -> None:
        """Until every provider has finished (finite sources) or was stopped."""
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def stop(self) -> None:
        """Cancel the providers' tasks; each one closes its provider on the way out."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def status(self) -> list[ProviderStatus]:
        """A snapshot per provider, with its event rate since the previous snapshot."""
        now = time.monotonic()
        out = []
        for p in self.providers:
            meter = self._meters[p.name]
            count = p.ticks + p.trades
            elapsed = max(now - meter.last_time, 1e-9)
            rate = (count - meter.last_count) / elapsed
            meter.last_count, meter.last_time = count, now
            out.append(ProviderStatus(p.name, p.state.value, p.reason, count, p.errors, rate))
        return out


async def run_providers(
    bootstrap: str, providers: Sequence[Provider], *, buffer_size: int = 10_000
) -> ProducerStats:
    """Run finite providers to the end, deliver everything, return the producer's counters.

    Raises:
        KafkaConnectionError: (aiokafka) no broker at ``bootstrap``.
    """
    async with IngestProducer(bootstrap, buffer_size=buffer_size) as producer:
        runner = IngestRunner(producer, providers)
        runner.start()
        try:
            await runner.wait()
        finally:
            await runner.stop()
        await producer.flush()
    return producer.stats


async def run_simulation(
    bootstrap: str,
    ticks: int,
    *,
    seed: int = 0,
    symbols: Sequence[str] = DEFAULT_SYMBOLS,
    speed: float = 0.0,
    config: SimConfig | None = None,
) -> ProducerStats:
    """Simulate exactly ``ticks`` provider ticks (plus truth, trades, health) into Kafka.

    ``speed=0`` runs as fast as the broker takes them; ``config`` overrides ``seed`` and
    ``symbols`` when given.
    """
    config = config or SimConfig(symbols=tuple(symbols), seed=seed)
    provider = SimulatorProvider(config, speed=speed, max_ticks=ticks)
    return await run_providers(bootstrap, [provider])
