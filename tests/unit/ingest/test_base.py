from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from agents.ingest.base import Event, Provider, ProviderState
from agents.ingest.errors import IllegalTransition
from schemas.records import ProviderHealth


def state_of(provider: Provider) -> ProviderState:
    """``provider.state`` now. Through a call: mypy keeps a property narrowed by an ``assert``
    through the calls that change it, and would call the next state's check impossible."""
    return provider.state


class _Fake(Provider):
    async def _produce(self) -> AsyncIterator[Event]:
        health = self.transition(ProviderState.UP)
        assert health is not None
        yield health


def test_state_machine_refuses_illegal_transitions() -> None:
    provider = _Fake("fake", ["AAPL"], clock=lambda: 1)
    with pytest.raises(IllegalTransition):
        provider.transition(ProviderState.UP)  # not started
    provider.transition(ProviderState.STARTING)
    health = provider.transition(ProviderState.DOWN, "no network")
    assert isinstance(health, ProviderHealth)
    assert (health.state, health.reason, health.event_time_ms) == ("down", "no network", 1)
    assert provider.transition(ProviderState.DOWN, "no network") is None  # unchanged: no record
    assert provider.transition(ProviderState.DEGRADED, "half") is not None
    provider.transition(ProviderState.STOPPED)
    with pytest.raises(IllegalTransition):
        provider.transition(ProviderState.UP)


async def test_context_manager_and_iteration() -> None:
    async with _Fake("fake", ["AAPL"], clock=lambda: 5) as provider:
        assert state_of(provider) is ProviderState.STARTING
        events = [event async for event in provider]
    assert [type(e) for e in events] == [ProviderHealth]
    assert state_of(provider) is ProviderState.STOPPED
    await provider.stop()  # idempotent


def test_sequence_numbers_increase() -> None:
    provider = _Fake("fake", [])
    assert [provider.next_seq() for _ in range(3)] == [0, 1, 2]
