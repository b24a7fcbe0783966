"""Liveness: is a symbol's feed alive, and are its providers? Pure, no I/O; the clock is passed
in (the gateway's monotonic time, seconds).

A market-data client's worst failure is the silent one: connected, heartbeats fine, and no
price because the feed behind died. A quiet market and a dead feed look the same from a socket.
So each symbol has a status, kept by every gateway from what it reads:

* ``live``: its last price arrived within twice its expected interval (the interval is learned:
  an average of the gaps between its prices' arrivals here, at least ``min_interval_s``);
* ``stale``: nothing for longer than that (or nothing yet);
* ``recovering``: prices arrive again after a stale spell; ``live`` again after
  ``RECOVERED_AFTER`` of them in a row, each on time.

Each provider of the symbol has the state the arbitration worker last published for it
(``fiml.provider.health``: ``up``, ``degraded``, ``down``; the worker marks a provider down
when it has been silent for twice its expected interval while others tick, in event time).

Changes come back from ``on_price``, ``on_health`` and ``tick`` as ``Change`` values; the
gateway pushes them to the subscriptions that asked (``status: true``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from schemas.codec import encode
from schemas.protocol import StatusMessage

__all__ = ["RECOVERED_AFTER", "Change", "Liveness", "Status", "SymbolLiveness", "status_frame"]

#: Prices on time in a row that end a recovery.
RECOVERED_AFTER = 3
#: Weight of one gap in the learned interval.
_ALPHA = 0.1
#: A gap counts for at most this many intervals in the average (one long pause of a quiet
#: market does not teach that prices come every ten minutes).
_MAX_GAP_FACTOR = 4.0


class Status(StrEnum):
    LIVE = "live"
    STALE = "stale"
    RECOVERING = "recovering"


@dataclass(slots=True)
class SymbolLiveness:
    """What a gateway knows of one symbol's feed."""

    status: Status = Status.STALE
    since: float = 0.0  # monotonic time of the last status change
    last_arrival: float | None = None  # monotonic time the last price arrived
    last_event_ms: int | None = None  # its event time
    interval_s: float = 0.0  # learned expected interval between prices (0: not yet)
    on_time: int = 0  # prices on time in a row while recovering
    providers: dict[str, str] = field(default_factory=dict)  # provider -> up/degraded/down

    def deadline(self, min_interval_s: float, default_interval_s: float) -> float | None:
        """When it goes stale if nothing arrives (None: no price yet)."""
        if self.last_arrival is None:
            return None
        interval = self.interval_s if self.interval_s > 0 else default_interval_s
        return self.last_arrival + 2 * max(interval, min_interval_s)


@dataclass(frozen=True, slots=True)
class Change:
    symbol: str
    state: SymbolLiveness  # the symbol's liveness after the change (do not mutate)


class Liveness:
    """Every symbol's liveness at one gateway."""

    def __init__(self, min_interval_s: float = 0.25, default_interval_s: float = 5.0) -> None:
        """``min_interval_s``: no feed is expected faster (a burst does not make the next
        pause look like a death); ``default_interval_s``: the expectation before any gap has
        been seen."""
        self._min = min_interval_s
        self._default = default_interval_s
        self._symbols: dict[str, SymbolLiveness] = {}

    def get(self, symbol: str) -> SymbolLiveness:
        """The symbol's liveness (``stale``, nothing known, for a symbol never seen)."""
        return self._symbols.get(symbol) or SymbolLiveness()

    def on_price(self, symbol: str, event_time_ms: int, now: float) -> Change | None:
        """A price of ``symbol`` arrived at ``now``."""
        s = self._symbols.get(symbol)
        if s is None:
            s = self._symbols[symbol] = SymbolLiveness(since=now)
        changed = False
        if s.last_arrival is not None and s.status is not Status.STALE:
            gap = now - s.last_arrival
            if s.interval_s <= 0:
                s.interval_s = max(gap, self._min)
            else:
                capped = min(gap, _MAX_GAP_FACTOR * s.interval_s)
                s.interval_s = max(s.interval_s + _ALPHA * (capped - s.interval_s), self._min)
        if s.status is Status.STALE:
            s.status, s.since, s.on_time, changed = Status.RECOVERING, now, 1, True
        elif s.status is Status.RECOVERING:
            s.on_time += 1
            if s.on_time >= RECOVERED_AFTER:
                s.status, s.since, changed = Status.LIVE, now, True
        s.last_arrival = now
        if s.last_event_ms is None or event_time_ms > s.last_event_ms:
            s.last_event_ms = event_time_ms
        return Change(symbol, s) if changed else None

    def on_health(self, symbol: str, provider: str, state: str, now: float) -> Change | None:
        """The worker published ``state`` for ``provider`` on ``symbol``."""
        s = self._symbols.get(symbol)
        if s is None:
            s = self._symbols[symbol] = SymbolLiveness(since=now)
        if s.providers.get(provider) == state:
            return None
        s.providers[provider] = state
        return Change(symbol, s)

    def tick(self, now: float) -> list[Change]:
        """Symbols whose prices stopped: ``stale`` once twice their expected interval has
        passed without one."""
        changes = []
        for symbol, s in self._symbols.items():
            if s.status is Status.STALE:
                continue
            deadline = s.deadline(self._min, self._default)
            if deadline is not None and now > deadline:
                s.status, s.since, s.on_time = Status.STALE, now, 0
                changes.append(Change(symbol, s))
        return changes


def status_frame(subscription_id: str, symbol: str, state: SymbolLiveness, now_ms: int) -> bytes:
    """The ``status`` message of ``symbol`` for one subscription."""
    return encode(
        StatusMessage(
            timestamp_ms=now_ms,
            subscription_id=subscription_id,
            symbol=symbol,
            status=state.status.value,
            last_event_time_ms=state.last_event_ms,
            expected_interval_ms=round(state.interval_s * 1000) if state.interval_s else None,
            providers=dict(sorted(state.providers.items())),
        )
    )
