"""Shared resilience helpers for the network adapters: backoff, retry, circuit breaker, rate limit.

All three take their clock (and ``sleep``) as parameters so that tests drive them without
waiting; the defaults are ``time.monotonic`` and ``asyncio.sleep``.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TypeVar

from agents.ingest.errors import CircuitOpenError, ProviderError

__all__ = [
    "Backoff",
    "BreakerState",
    "CircuitBreaker",
    "TokenBucket",
    "retry",
]

T = TypeVar("T")
Sleep = Callable[[float], Awaitable[None]]
Monotonic = Callable[[], float]


@dataclass
class Backoff:
    """Exponential backoff with full jitter: attempt n waits uniform(0, min(cap, base * 2**n)).

    Full jitter (AWS architecture blog, "Exponential Backoff And Jitter") spreads the retries of
    many clients so that they do not hit a recovering API in lockstep.
    """

    base: float = 0.5
    cap: float = 30.0
    rng: random.Random = field(default_factory=random.Random)

    def delay(self, attempt: int) -> float:
        """Seconds to wait before retry number ``attempt`` (0-based)."""
        return self.rng.uniform(0.0, min(self.cap, self.base * 2.0**attempt))


async def retry(
    call: Callable[[], Awaitable[T]],
    *,
    attempts: int = 3,
    backoff: Backoff | None = None,
    sleep: Sleep = asyncio.sleep,
) -> T:
    """``await call()``, retrying ``ProviderError(retryable=True)`` up to ``attempts`` times.

    Raises:
        ProviderError: the last error, once the attempts are used up, or at once when the
            error is not retryable (a bad symbol will not get better by asking again).
    """
    backoff = backoff or Backoff()
    for attempt in range(attempts):
        try:
            return await call()
        except ProviderError as error:
            if not error.retryable or attempt == attempts - 1:
                raise
            await sleep(backoff.delay(attempt))
    raise AssertionError("unreachable: attempts must be >= 1")  # pragma: no cover


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Stops calling a provider after ``threshold`` consecutive failures, for ``reset_after`` s.

    Closed: calls go through. Open: calls fail at once with ``CircuitOpenError``. After
    ``reset_after`` seconds it is half-open: one trial call goes through; success closes the
    breaker, failure opens it again for another period.
    """

    def __init__(
        self, threshold: int = 5, reset_after: float = 30.0, clock: Monotonic = time.monotonic
    ) -> None:
        self.threshold = threshold
        self.reset_after = reset_after
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self.last_error: str | None = None

    @property
    def state(self) -> BreakerState:
        if self._opened_at is None:
            return BreakerState.CLOSED
        if self._clock() - self._opened_at >= self.reset_after:
            return BreakerState.HALF_OPEN
        return BreakerState.OPEN

    def check(self) -> None:
        """Raise if a call may not be made now.

        Raises:
            CircuitOpenError: the breaker is open (with the error that opened it).
        """
        if self.state is BreakerState.OPEN:
            raise CircuitOpenError(
                f"circuit open after {self._failures} failures: {self.last_error}"
            )

    def record_success(self) -> None:
        self._failures = 0
        self._opened_at = None

    def record_failure(self, error: BaseException) -> None:
        self._failures += 1
        self.last_error = str(error) or type(error).__name__
        if self._failures >= self.threshold or self.state is BreakerState.HALF_OPEN:
            self._opened_at = self._clock()

    async def call(self, call: Callable[[], Awaitable[T]]) -> T:
        """``await call()`` through the breaker.

        Raises:
            CircuitOpenError: the breaker is open; ``call`` was not made.
            Exception: whatever ``call`` raised (also counted as a failure).
        """
        self.check()
        try:
            result = await call()
        except Exception as error:
            self.record_failure(error)
            raise
        self.record_success()
        return result


class TokenBucket:
    """A token-bucket rate limiter: ``rate`` requests per ``per`` seconds, bursts up to ``burst``.

    Alpha Vantage's free plan allows 5 requests a minute and FMP's 10: ``TokenBucket(5, 60)``.
    """

    def __init__(
        self,
        rate: float,
        per: float = 60.0,
        burst: float | None = None,
        clock: Monotonic = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if rate <= 0 or per <= 0:
            raise ValueError("rate and per must be positive")
        self.capacity = burst if burst is not None else rate
        self._refill = rate / per  # tokens per second
        self._tokens = self.capacity
        self._clock = clock
        self._sleep = sleep
        self._last = clock()

    def _update(self) -> None:
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._last) * self._refill)
        self._last = now

    def try_acquire(self) -> bool:
        """Take a token if one is available now."""
        self._update()
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    def wait_time(self) -> float:
        """Seconds until a token is available (0 if one is)."""
        self._update()
        return max(0.0, (1.0 - self._tokens) / self._refill)

    async def acquire(self) -> None:
        """Wait until a token is available and take it (no timeout: callers cancel)."""
        while not self.try_acquire():
            await self._sleep(self.wait_time())
