"""Who wants which channel, and which closed subscriptions can still be resumed. Pure, no I/O.

The hub looks up ``subscribers(channel)`` once per record; connections add and remove their
subscriptions. ``ResumeStore`` keeps a bounded number of recently closed subscriptions (their
sequence numbers and positions) for a while, so that a client that reconnects can resume.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from typing import Protocol

from gateway.channels import Channel
from gateway.subscription import Subscription

__all__ = ["Registry", "ResumeStore", "Waker"]


class Waker(Protocol):
    """The connection that owns a subscription, as the hub sees it."""

    def wake(self) -> None:
        """Something is pending: let the writer run."""

    def fail(self, exc: BaseException) -> None:
        """The client cannot keep up: disconnect it (never waits)."""


class Registry:
    """Channel -> subscribers, and subscription id -> subscription, for one gateway process."""

    def __init__(self) -> None:
        self._by_channel: dict[Channel, list[tuple[Subscription, Waker]]] = {}
        self._by_id: dict[str, tuple[Subscription, Waker]] = {}

    def __len__(self) -> int:
        return len(self._by_id)

    def __contains__(self, subscription_id: object) -> bool:
        return subscription_id in self._by_id

    def add(self, sub: Subscription, owner: Waker) -> None:
        """Index ``sub``; it receives updates from now on.

        Raises:
            KeyError: its id is already registered.
        """
        if sub.id in self._by_id:
            raise KeyError(sub.id)
        self._by_id[sub.id] = (sub, owner)
        for channel in sub.spec.channels:
            self._by_channel[channel] = [*self._by_channel.get(channel, ()), (sub, owner)]

    def remove(self, sub: Subscription) -> None:
        """Stop delivering to ``sub`` (no-op if it is not registered)."""
        if self._by_id.pop(sub.id, None) is None:
            return
        for channel in sub.spec.channels:
            entries = self._by_channel.get(channel)
            if entries is None:
                continue
            # Rebind, never mutate: the hub may be iterating over the old list right now (a
            # subscription removed by ``Waker.fail`` during dispatch).
            kept = [e for e in entries if e[0] is not sub]
            if kept:
                self._by_channel[channel] = kept
            else:
                del self._by_channel[channel]

    def subscribers(self, channel: Channel) -> list[tuple[Subscription, Waker]]:
        return self._by_channel.get(channel, [])

    def stream_counts(self) -> dict[str, int]:
        """Subscriptions per stream type."""
        return dict(Counter(sub.spec.stream_type.value for sub, _ in self._by_id.values()))

    def symbols(self) -> list[str]:
        """Every symbol with at least one subscriber, sorted."""
        return sorted({channel[1] for channel in self._by_channel})


class ResumeStore:
    """Recently closed subscriptions, by id: at most ``max_entries``, each for ``ttl_s``."""

    def __init__(self, max_entries: int, ttl_s: float) -> None:
        self._max = max_entries
        self._ttl = ttl_s
        self._parked: OrderedDict[str, tuple[Subscription, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._parked)

    def park(self, sub: Subscription, now: float) -> None:
        """Keep ``sub`` (without its pending updates) for a later resume."""
        sub.clear()
        self._parked.pop(sub.id, None)
        self._parked[sub.id] = (sub, now)
        self.expire(now)
        while len(self._parked) > self._max:
            self._parked.popitem(last=False)

    def claim(self, subscription_id: str, now: float) -> Subscription | None:
        """Take the parked subscription out, or None if unknown or expired."""
        self.expire(now)
        entry = self._parked.pop(subscription_id, None)
        return entry[0] if entry else None

    def discard(self, subscription_id: str) -> None:
        self._parked.pop(subscription_id, None)

    def expire(self, now: float) -> None:
        while self._parked:
            _, (_, parked_at) = next(iter(self._parked.items()))
            if now - parked_at < self._ttl:
                break
            self._parked.popitem(last=False)
