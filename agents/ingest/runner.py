"""Runs providers into the producer, each in its own task, so one failing provider never stops
the others; and the one-call entry points that ``fiml up`` and the tests use.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from agents.ingest.base import Provider, ProviderState, wall_clock_ms
from agents.ingest.producer import IngestProducer, ProducerStats
from agents.ingest.simconfig import DEFAULT_SYMBOLS, SimConfig
from agents.ingest.simulator import SimulatorProvider
from agents.metrics import Reading
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


#: The ``provider`` of the health records that report ingestion's own losses.
LOSS_REPORTER = "ingest"


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
        self._drops_reported = 0

    def report_losses(self) -> None:
        """Publish live records dropped since the last report (the buffer was full: a broker
        outage longer than it holds) on ``fiml.provider.health`` as provider ``ingest``,
        ``degraded``, so the loss is seen where provider health is; call it now and then.
        Retried at the next call if the report itself finds the buffer full."""
        dropped = self.producer.stats.dropped
        if dropped <= self._drops_reported:
            return
        report = ProviderHealth(
            provider=LOSS_REPORTER,
            state="degraded",
            event_time_ms=wall_clock_ms(),
            reason=f"{dropped - self._drops_reported:,} live records dropped since the last "
            f"report ({dropped:,} in all): the buffer toward Kafka was full",
            errors=dropped,
        )
        if self.producer.offer(report):
            self._drops_reported = dropped

    def readings(self) -> list[Reading]:
        """Prometheus metrics (``agents.metrics``): read at scrape time."""
        stats = self.producer.stats
        events: dict[tuple[str, ...], float] = {
            (p.name, kind): float(n)
            for p in self.providers
            for kind, n in (("tick", p.ticks), ("trade", p.trades), ("rejected", p.errors))
        }
        states: dict[tuple[str, ...], float] = {
            (p.name, s.value): float(p.state is s) for p in self.providers for s in ProviderState
        }
        return [
            Reading(
                "fiml_ingest_events",
                "Events each provider produced, by kind.",
                "counter",
                events,
                ("provider", "kind"),
            ),
            Reading(
                "fiml_ingest_records",
                "Records by outcome: sent to their topic, sent to "
                "the dead letters, dropped (buffer full), failed (Kafka gave up).",
                "counter",
                {
                    ("sent",): stats.sent,
                    ("deadlettered",): stats.deadlettered,
                    ("dropped",): stats.dropped,
                    ("failed",): stats.failed,
                },
                ("outcome",),
            ),
            Reading(
                "fiml_ingest_reconnects",
                "Kafka clients replaced after aiokafka gave up.",
                "counter",
                {(): stats.reconnects},
            ),
            Reading(
                "fiml_ingest_queued",
                "Records held in memory ahead of Kafka.",
                "gauge",
                {(): self.producer.queued},
            ),
            Reading(
                "fiml_ingest_provider_state",
                "1 for each provider's current state.",
                "gauge",
                states,
                ("provider", "state"),
            ),
        ]

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
