"""The provider interface: an async source of ticks, trades and health for a set of symbols.

Every adapter (simulator, replay, ccxt, yfinance, Alpha Vantage, FMP) subclasses ``Provider``
and implements one async generator, ``_produce()``. The base class owns the lifecycle
(``start`` / ``stop`` / ``async with``), the state machine that refuses illegal transitions,
and the health records (``ProviderHealth``) emitted on every state change, so adapters only
translate payloads and talk to their network.

Lifecycle::

    idle -> starting -> up <-> degraded <-> down -> stopped
                  \\_____________________________/   (any running state -> stopped)
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from types import TracebackType
from typing import Self

from agents.ingest.errors import IllegalTransition
from schemas.records import ProviderHealth, RawTick, RawTrade

__all__ = [
    "Clock",
    "Event",
    "Provider",
    "ProviderState",
    "Rejected",
    "wall_clock_ms",
]


def wall_clock_ms() -> int:
    """Now, in UTC epoch milliseconds (the ``ingest_time_ms`` of live providers)."""
    return time.time_ns() // 1_000_000


Clock = Callable[[], int]


class ProviderState(StrEnum):
    """Where a provider is in its life; only the middle three are published as health."""

    IDLE = "idle"
    STARTING = "starting"
    UP = "up"
    DEGRADED = "degraded"
    DOWN = "down"
    STOPPED = "stopped"


_RUNNING = {ProviderState.UP, ProviderState.DEGRADED, ProviderState.DOWN}
_ALLOWED: dict[ProviderState, frozenset[ProviderState]] = {
    ProviderState.IDLE: frozenset({ProviderState.STARTING, ProviderState.STOPPED}),
    ProviderState.STARTING: frozenset(_RUNNING | {ProviderState.STOPPED}),
    ProviderState.UP: frozenset(_RUNNING | {ProviderState.STOPPED}),
    ProviderState.DEGRADED: frozenset(_RUNNING | {ProviderState.STOPPED}),
    ProviderState.DOWN: frozenset(_RUNNING | {ProviderState.STOPPED}),
    ProviderState.STOPPED: frozenset({ProviderState.STOPPED}),
}


@dataclass(frozen=True, slots=True)
class Rejected:
    """A provider payload that could not become a valid record: it goes to the dead letters.

    ``payload`` is the original bytes as received (or their JSON), ``key`` the symbol it was
    about when known, ``reason`` what was wrong.
    """

    provider: str
    payload: bytes
    reason: str
    key: str | None = None


Event = RawTick | RawTrade | ProviderHealth | Rejected


class Provider(ABC):
    """One provider's data for a set of canonical symbols.

    Use it as ``async with provider: async for event in provider: ...``. Iteration yields
    ``RawTick``, ``RawTrade``, ``ProviderHealth`` (on each state change) and ``Rejected``
    events until the provider is stopped or, for finite sources, exhausted.

    Attributes:
        name: the provider id written into every record (``provider`` field, health key).
        symbols: the canonical symbols asked for.
        lossless: True when the source can wait (simulator, replay): the producer then applies
            backpressure instead of dropping when its buffer is full.
    """

    lossless: bool = False

    def __init__(self, name: str, symbols: Sequence[str], clock: Clock = wall_clock_ms) -> None:
        self.name = name
        self.symbols = list(symbols)
        self.clock = clock
        self._state = ProviderState.IDLE
        self.reason: str | None = None
        self.ticks = 0
        self.trades = 0
        self.errors = 0
        self._seq = 0

    # --- state ------------------------------------------------------------------------------

    @property
    def state(self) -> ProviderState:
        return self._state

    def transition(self, target: ProviderState, reason: str | None = None) -> ProviderHealth | None:
        """Move to ``target``; return the health record to publish, or None if nothing changed.

        Raises:
            IllegalTransition: ``target`` is not reachable from the current state.
        """
        if target not in _ALLOWED[self._state]:
            raise IllegalTransition(self.name, self._state.value, target.value)
        changed = target != self._state or reason != self.reason
        self._state, self.reason = target, reason
        if not changed or target not in _RUNNING:
            return None
        return self.health()

    def health(self) -> ProviderHealth:
        """The provider's current health as a record (state must be up, degraded or down)."""
        state = self._state.value if self._state in _RUNNING else "down"
        return ProviderHealth(
            provider=self.name,
            state=state,
            reason=self.reason,
            event_time_ms=self.clock(),
            ticks=self.ticks + self.trades,
            errors=self.errors,
        )

    def next_seq(self) -> int:
        """The next per-provider sequence number (strictly increasing from 0)."""
        seq = self._seq
        self._seq += 1
        return seq

    # --- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Prepare the provider (open clients); the first events come from iteration."""
        self.transition(ProviderState.STARTING)
        await self._open()

    async def stop(self) -> None:
        """Release everything the provider opened; safe to call more than once."""
        if self._state is ProviderState.STOPPED:
            return
        self.transition(ProviderState.STOPPED)
        await self._close()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def __aiter__(self) -> AsyncIterator[Event]:
        return self.events()

    async def events(self) -> AsyncGenerator[Event, None]:
        """The provider's events, counted; ends when stopped or when the source is exhausted."""
        if self._state is ProviderState.IDLE:
            await self.start()
        async for event in self._produce():
            self._count(event)
            yield event
            if self._state is ProviderState.STOPPED:
                return

    # --- for subclasses ---------------------------------------------------------------------

    def _count(self, event: Event) -> None:
        """Update the counters the status line and health records show."""
        if isinstance(event, RawTick):
            self.ticks += 1
        elif isinstance(event, RawTrade):
            self.trades += 1
        elif isinstance(event, Rejected):
            self.errors += 1

    async def _open(self) -> None:  # noqa: B027 - optional hook, not abstract
        """Open network clients; the default opens nothing."""

    async def _close(self) -> None:  # noqa: B027 - optional hook, not abstract
        """Close what ``_open`` opened; the default closes nothing."""

    @abstractmethod
    def _produce(self) -> AsyncIterator[Event]:
        """Yield the provider's events (an async generator); health via ``transition``."""
