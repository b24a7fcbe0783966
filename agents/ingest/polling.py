"""The shared loop of the request/response adapters (ccxt REST, yfinance, Alpha Vantage, FMP).

Each poll cycle asks for every symbol in turn, through the provider's own rate limiter, circuit
breaker and retry-with-backoff; then the provider's state follows from what the cycle got:
every symbol answered -> up, some -> degraded (the reason names the failures), none -> down
(the reason is the error). Adapters implement ``_fetch(symbol)`` only.
"""

from __future__ import annotations

import asyncio
from abc import abstractmethod
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import orjson

from agents.ingest.base import Clock, Event, Provider, ProviderState, Rejected, wall_clock_ms
from agents.ingest.errors import PayloadError, ProviderError
from agents.ingest.resilience import Backoff, CircuitBreaker, Sleep, TokenBucket, retry

__all__ = ["PollingConfig", "PollingProvider", "rejected"]


@dataclass
class PollingConfig:
    """How a polling adapter paces and protects its calls.

    ``interval`` is the pause between cycles (seconds); ``limiter`` bounds requests per
    minute (the providers' plan limits); ``attempts`` is per call, including the first.
    """

    interval: float = 5.0
    attempts: int = 3
    limiter: TokenBucket | None = None
    breaker: CircuitBreaker = field(default_factory=CircuitBreaker)
    backoff: Backoff = field(default_factory=Backoff)
    sleep: Sleep = asyncio.sleep


def rejected(provider: str, payload: object, error: Exception, key: str | None) -> Rejected:
    """A dead-letter event for a payload that did not convert (payload kept as JSON bytes)."""
    return Rejected(
        provider=provider,
        payload=orjson.dumps(payload, default=str),
        reason=f"{type(error).__name__}: {error}",
        key=key,
    )


class PollingProvider(Provider):
    """A provider that polls ``_fetch(symbol)`` for each symbol, cycle after cycle."""

    def __init__(
        self,
        name: str,
        symbols: Sequence[str],
        config: PollingConfig | None = None,
        clock: Clock = wall_clock_ms,
        max_cycles: int | None = None,
    ) -> None:
        super().__init__(name, symbols, clock)
        self.config = config or PollingConfig()
        self.max_cycles = max_cycles

    @abstractmethod
    async def _fetch(self, symbol: str) -> list[Event]:
        """Events for one symbol (network + pure conversion).

        Raises:
            ProviderError: the call failed (``retryable`` says whether to try again).
        """

    async def _fetch_protected(self, symbol: str) -> list[Event]:
        config = self.config
        if config.limiter is not None:
            await config.limiter.acquire()
        return await config.breaker.call(
            lambda: retry(
                lambda: self._fetch(symbol),
                attempts=config.attempts,
                backoff=config.backoff,
                sleep=config.sleep,
            )
        )

    async def _produce(self) -> AsyncIterator[Event]:
        cycle = 0
        while self.max_cycles is None or cycle < self.max_cycles:
            cycle += 1
            failures: list[str] = []
            for symbol in self.symbols:
                try:
                    events = await self._fetch_protected(symbol)
                except ProviderError as error:
                    self.errors += 1
                    failures.append(f"{symbol}: {error}")
                    continue
                except PayloadError as error:  # adapters normally return Rejected instead
                    self.errors += 1
                    failures.append(f"{symbol}: {error}")
                    continue
                for event in events:
                    yield event
            health = self.transition(*self._verdict(failures))
            if health is not None:
                yield health
            if self.max_cycles is None or cycle < self.max_cycles:
                await self.config.sleep(self.config.interval)

    def _verdict(self, failures: list[str]) -> tuple[ProviderState, str | None]:
        if not failures:
            return ProviderState.UP, None
        if len(failures) < len(self.symbols):
            return ProviderState.DEGRADED, "; ".join(failures)
        return ProviderState.DOWN, f"{self.name} unreachable: " + "; ".join(failures)
