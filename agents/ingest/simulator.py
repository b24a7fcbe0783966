"""The simulator provider: a seeded market and several imperfect providers watching it.

``SimModel`` is pure: it owns a ``random.Random(seed)`` and an event-time clock that starts at
``SimConfig.start_ms`` and moves in ``step_ms`` steps; it never reads the wall clock, so a seed
gives the same records on every run. Per symbol the true price is a geometric random walk
(volatility by asset type, see ``simconfig``); each simulated provider observes it with its own
rate, noise, staleness, gaps, outages and bad prints, and the truth itself is emitted as
``RawTick(provider="truth")`` for ``fiml.sim.truth``.

``SimulatorProvider`` paces the model against the wall clock (``speed`` x real time) or runs
it as fast as the consumer takes events (``speed=0``).
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections import deque
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

from agents.ingest.base import Event, Provider, ProviderState
from agents.ingest.simconfig import ANNUAL_VOLATILITY, SimConfig, SimProviderConfig
from schemas import symbols as sym
from schemas.records import AssetType, RawTick, RawTrade

__all__ = ["TRUTH_PROVIDER", "SimModel", "SimStats", "SimulatorProvider"]

TRUTH_PROVIDER = "truth"
_YEAR_MS = 365.25 * 24 * 3600 * 1000
_TRADE_SIZE = {AssetType.CRYPTO: 0.05, AssetType.FX: 50_000.0}  # median size; else 100 shares


@dataclass
class SimStats:
    """What the model did per provider (for tests and the docs, not for the topics)."""

    opportunities: int = 0
    ticks: int = 0
    trades: int = 0
    gaps: int = 0
    outages: int = 0
    outage_skips: int = 0
    outliers: int = 0


class _Feed:
    """One provider's view of one symbol: when it ticks next and whether it is down."""

    __slots__ = ("down_until", "next_ms")

    def __init__(self, next_ms: int) -> None:
        self.next_ms = next_ms
        self.down_until = -1


class SimModel:
    """The pure simulation; ``step()`` advances event time by one step and returns its events."""

    def __init__(self, config: SimConfig | None = None) -> None:
        self.config = config = config or SimConfig()
        self.rng = random.Random(config.seed)
        self.now_ms = config.start_ms
        self.kinds = {s: sym.classify(sym.normalize(s)) for s in config.symbols}
        self.symbols = list(self.kinds)
        self.truth = {
            s: config.initial_prices.get(s, 1.1 if k is AssetType.FX else 100.0)
            for s, k in self.kinds.items()
        }
        years_per_step = config.step_ms / _YEAR_MS
        self._sigma = {
            s: ANNUAL_VOLATILITY[k] * math.sqrt(years_per_step) for s, k in self.kinds.items()
        }
        longest = max((p.delay_ms for p in config.providers), default=0) // config.step_ms + 1
        self._history = {s: deque([p], maxlen=longest) for s, p in self.truth.items()}
        self._feeds = {
            (p.name, s): _Feed(config.start_ms + self.rng.randrange(p.tick_interval_ms))
            for p in config.providers
            for s in self.symbols
        }
        self._seq = {p.name: 0 for p in config.providers} | {TRUTH_PROVIDER: 0}
        self.stats = {p.name: SimStats() for p in config.providers}

    def _next_seq(self, provider: str) -> int:
        seq = self._seq[provider]
        self._seq[provider] = seq + 1
        return seq

    def step(self) -> list[Event]:
        """Advance one step: move every true price, then let each provider observe it."""
        self.now_ms += self.config.step_ms
        out: list[Event] = []
        for s in self.symbols:
            z = self.rng.gauss(0.0, 1.0)
            sigma = self._sigma[s]
            self.truth[s] *= math.exp(sigma * z - 0.5 * sigma * sigma)
            self._history[s].append(self.truth[s])
            if self.config.truth:
                out.append(self._truth_tick(s))
        for provider in self.config.providers:
            for s in self.symbols:
                feed = self._feeds[(provider.name, s)]
                if self.now_ms >= feed.next_ms:
                    jitter = self.rng.uniform(0.5, 1.5)
                    feed.next_ms = self.now_ms + max(1, round(provider.tick_interval_ms * jitter))
                    out.extend(self._observe(provider, s, feed))
        return out

    def events(self) -> Iterator[Event]:
        """Every event, step after step, forever."""
        while True:
            yield from self.step()

    def _truth_tick(self, s: str) -> RawTick:
        return RawTick(
            provider=TRUTH_PROVIDER, symbol=s, provider_symbol=s, asset_type=self.kinds[s],
            price=self.truth[s], event_time_ms=self.now_ms, ingest_time_ms=self.now_ms,
            seq=self._next_seq(TRUTH_PROVIDER),
        )  # fmt: skip

    def _observe(self, p: SimProviderConfig, s: str, feed: _Feed) -> list[Event]:
        stats = self.stats[p.name]
        stats.opportunities += 1
        rng = self.rng
        # Draw every random number on every opportunity, so that changing one rate does not
        # shift the random stream of everything after it.
        u_outage, u_gap, u_outlier, u_trade = rng.random(), rng.random(), rng.random(), rng.random()
        noise, sign, size = rng.gauss(0.0, 1.0), rng.choice((-1.0, 1.0)), rng.lognormvariate(0, 1)
        if self.now_ms < feed.down_until:
            stats.outage_skips += 1
            return []
        if u_outage < p.outage_rate:
            stats.outages += 1
            feed.down_until = self.now_ms + p.outage_ms
            return []
        if u_gap < p.gap_rate:
            stats.gaps += 1
            return []
        lag_steps = min(p.delay_ms // self.config.step_ms, len(self._history[s]) - 1)
        true_then = self._history[s][-1 - lag_steps]
        error_bps = noise * p.noise_bps
        if u_outlier < p.outlier_rate:
            stats.outliers += 1
            error_bps = sign * p.outlier_bps * (1.0 + 2.0 * abs(noise) / 3.0)
        price = true_then * (1.0 + error_bps / 10_000.0)
        half = price * p.spread_bps / 20_000.0
        event_ms = self.now_ms - lag_steps * self.config.step_ms
        kind = self.kinds[s]
        stats.ticks += 1
        out: list[Event] = [
            RawTick(
                provider=p.name, symbol=s, provider_symbol=s, asset_type=kind, price=price,
                bid=price - half, ask=price + half, bid_size=round(size * 10, 4),
                ask_size=round(size * 12, 4), event_time_ms=event_ms, ingest_time_ms=self.now_ms,
                seq=self._next_seq(p.name),
            )
        ]  # fmt: skip
        if self.config.trades and u_trade < p.trade_rate:
            stats.trades += 1
            buy = sign > 0
            seq = self._next_seq(p.name)
            out.append(
                RawTrade(
                    provider=p.name, symbol=s, provider_symbol=s, asset_type=kind,
                    trade_id=f"{p.name}-{seq}", price=price + half if buy else price - half,
                    amount=round(_TRADE_SIZE.get(kind, 100.0) * size, 6),
                    side="buy" if buy else "sell", event_time_ms=event_ms,
                    ingest_time_ms=self.now_ms, seq=seq,
                )
            )  # fmt: skip
        return out


class SimulatorProvider(Provider):
    """The simulator as a ``Provider``: health for every simulated provider, then the stream.

    Args:
        config: the simulation (seed, symbols, providers, start time).
        speed: event time runs ``speed`` times as fast as the wall clock; 0 = as fast as the
            consumer takes the events (tests, benchmarks).
        max_ticks: stop after exactly this many ``RawTick`` from simulated providers (truth
            ticks and trades are not counted).
        duration_ms: stop when event time has advanced this much.
    """

    lossless = True

    def __init__(
        self,
        config: SimConfig | None = None,
        *,
        speed: float = 1.0,
        max_ticks: int | None = None,
        duration_ms: int | None = None,
        name: str = "sim",
    ) -> None:
        self.model = SimModel(config)
        super().__init__(name, self.model.symbols, clock=lambda: self.model.now_ms)
        self.speed = speed
        self.max_ticks = max_ticks
        self.duration_ms = duration_ms
        self.truth_ticks = 0

    def _count(self, event: Event) -> None:
        # Truth ticks are the answer key, not market data: keep them out of the tick count.
        if isinstance(event, RawTick) and event.provider == TRUTH_PROVIDER:
            self.truth_ticks += 1
        else:
            super()._count(event)

    async def _produce(self) -> AsyncIterator[Event]:
        model = self.model
        for provider in model.config.providers:  # announce each simulated provider as up
            self.reason = None
            yield self.health().model_copy(update={"provider": provider.name})
        health = self.transition(ProviderState.UP)
        if health is not None:
            yield health
        start_ms, wall0 = model.now_ms, time.monotonic()
        emitted = 0
        steps = 0
        while self.duration_ms is None or model.now_ms - start_ms < self.duration_ms:
            for event in model.step():
                if isinstance(event, RawTick) and event.provider != TRUTH_PROVIDER:
                    if self.max_ticks is not None and emitted >= self.max_ticks:
                        return
                    emitted += 1
                yield event
            steps += 1
            if self.max_ticks is not None and emitted >= self.max_ticks:
                return
            if self.speed > 0:
                due = wall0 + (model.now_ms - start_ms) / 1000.0 / self.speed
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            elif steps % 64 == 0:
                await asyncio.sleep(0)  # let the producer's sender run between bursts
