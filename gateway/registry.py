"""Who wants which channel. Pure, no I/O.

The hub looks up ``subscribers(channel)`` once per record; connections add and remove their
subscriptions. Subscription ids belong to their connection (two dashboard tabs may both call
theirs ``prices``), so the registry indexes subscriptions themselves, not their ids. Nothing
is kept of a subscription once it ends: resume tokens carry what a resume needs
(gateway/positions.py).
"""

from __future__ import annotations

from collections import Counter
from typing import Protocol

from gateway.channels import Channel
from gateway.subscription import Subscription

__all__ = ["Registry", "Waker"]


class Waker(Protocol):
    """The connection that owns a subscription, as the hub sees it."""

    def wake(self) -> None:
        """Something is pending: let the writer run."""

    def fail(self, exc: BaseException) -> None:
        """The client cannot keep up: disconnect it (never waits)."""


class Registry:
    """Channel -> subscribers, and every live subscription, for one gateway process."""

    def __init__(self) -> None:
        self._by_channel: dict[Channel, list[tuple[Subscription, Waker]]] = {}
        self._subs: dict[Subscription, Waker] = {}  # by identity: ids are per connection

    def __len__(self) -> int:
        return len(self._subs)

    def __contains__(self, sub: object) -> bool:
        return sub in self._subs

    def add(self, sub: Subscription, owner: Waker) -> None:
        """Index ``sub``; it receives updates from now on.

        Raises:
            KeyError: ``sub`` is already registered.
        """
        if sub in self._subs:
            raise KeyError(sub.id)
        self._subs[sub] = owner
        for channel in sub.spec.channels:
            self._by_channel[channel] = [*self._by_channel.get(channel, ()), (sub, owner)]

    def remove(self, sub: Subscription) -> None:
        """Stop delivering to ``sub`` (no-op if it is not registered)."""
        if self._subs.pop(sub, None) is None:
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
        return dict(Counter(sub.spec.stream_type.value for sub in self._subs))

    def symbols(self) -> list[str]:
        """Every symbol with at least one subscriber, sorted."""
        return sorted({channel[1] for channel in self._by_channel})
