from __future__ import annotations

import random

import pytest

from agents.ingest.errors import CircuitOpenError, ProviderError
from agents.ingest.resilience import Backoff, BreakerState, CircuitBreaker, TokenBucket, retry


def state_of(breaker: CircuitBreaker) -> BreakerState:
    """``breaker.state`` now. Through a call: mypy keeps a property narrowed by an ``assert``
    through the calls that change it, and would call the next state's check impossible."""
    return breaker.state


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_backoff_is_bounded_and_grows() -> None:
    backoff = Backoff(base=1.0, cap=8.0, rng=random.Random(1))
    for attempt in range(10):
        assert 0.0 <= backoff.delay(attempt) <= min(8.0, 2.0**attempt)


async def test_retry_retries_retryable_then_succeeds() -> None:
    clock = FakeTime()
    calls = 0

    async def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise ProviderError("timeout")
        return "ok"

    assert await retry(flaky, attempts=3, sleep=clock.sleep) == "ok"
    assert calls == 3 and len(clock.slept) == 2


async def test_retry_gives_up_at_once_on_permanent_errors() -> None:
    calls = 0

    async def bad_key() -> None:
        nonlocal calls
        calls += 1
        raise ProviderError("401", retryable=False)

    with pytest.raises(ProviderError):
        await retry(bad_key, attempts=5, sleep=FakeTime().sleep)
    assert calls == 1


async def test_circuit_breaker_opens_then_half_opens() -> None:
    clock = FakeTime()
    breaker = CircuitBreaker(threshold=2, reset_after=10.0, clock=clock)

    async def boom() -> None:
        raise ProviderError("connection refused")

    for _ in range(2):
        with pytest.raises(ProviderError):
            await breaker.call(boom)
    assert state_of(breaker) is BreakerState.OPEN
    with pytest.raises(CircuitOpenError, match="connection refused"):
        await breaker.call(boom)
    clock.now += 10.0
    assert state_of(breaker) is BreakerState.HALF_OPEN
    with pytest.raises(ProviderError):
        await breaker.call(boom)  # the trial call fails: open again
    assert state_of(breaker) is BreakerState.OPEN
    clock.now += 10.0

    async def fine() -> int:
        return 1

    assert await breaker.call(fine) == 1
    assert state_of(breaker) is BreakerState.CLOSED


async def test_token_bucket_enforces_alpha_vantage_rate() -> None:
    clock = FakeTime()
    bucket = TokenBucket(5, 60.0, clock=clock, sleep=clock.sleep)
    for _ in range(20):
        await bucket.acquire()
    # 5 at once (burst), then one every 12 s: 15 more take 180 s.
    assert clock.now == pytest.approx(180.0)
    assert not bucket.try_acquire()
    clock.now += 12.0
    assert bucket.try_acquire()
