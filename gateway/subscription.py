"""One subscription's state: pending updates, conflation, sequence numbers. Pure, no I/O.

The hub calls ``offer`` for every record of a subscribed channel (synchronously, never
waiting); the connection's writer asks ``due`` / ``take`` when to send and what. Memory is
bounded whatever the client does:

* ``conflated`` mode keeps the latest payload per channel (at most one per symbol) and is
  flushed at most once per ``interval_ms``;
* ``realtime`` mode keeps every payload and is flushed as soon as the writer runs; past
  ``max_pending`` it falls back to latest-value-per-symbol conflation until the next flush
  (each symbol keeps its newest payload; the superseded ones count as drops, the overflow as a
  conflation), and a client still too slow is then disconnected by the connection's watchdog;
* batched streams (trades, raw ticks) keep every payload, flushed once per interval (or at once
  in real-time mode), early when ``max_pending`` is reached; past twice that the client is too
  slow (``SlowClientError``): trades are events, never conflated nor silently dropped.

Each flushed message takes the next ``seq`` and carries a resume token of the hub's Kafka
positions at that moment (gateway/positions.py), so that a client resuming from it can be sent
exactly what came after, by any gateway.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from gateway.channels import Channel, StreamSpec
from gateway.errors import SlowClientError

__all__ = ["Positions", "Subscription"]

Positions = tuple[int, ...]
"""Next offset per partition of the subscription's topic (index = partition)."""


@dataclass(eq=False, slots=True)
class Subscription:
    """State of one subscription on one connection."""

    id: str
    spec: StreamSpec
    mode: Literal["conflated", "realtime"]
    interval_s: float
    max_pending: int = 2_000
    seq: int = 0
    #: While a replay or resume catch-up runs, live updates are kept (bounded) but not sent.
    held: bool = False
    #: A bounded replay (``replay_to``) gets no live updates at all.
    live: bool = True
    #: The client asked for its symbols' liveness (``status`` messages, heartbeat event times).
    status: bool = False
    #: Updates superseded by conflation in real-time mode, and real-time overflows (fallbacks
    #: to conflation), since the connection last collected them (``collect_counts``).
    dropped: int = 0
    conflations: int = 0
    _latest: dict[Channel, bytes] = field(default_factory=dict)
    #: Pending updates in arrival order, as the hub hands them over: runs of one channel's
    #: payloads. The hub's list is shared by every subscriber and is never mutated here.
    _queue: list[tuple[Channel, list[bytes]]] = field(default_factory=list)
    _queued: int = 0
    _due_at: float = 0.0
    _last_flush: float = float("-inf")
    #: Makes the resume token of message ``seq`` made at ``positions`` (gateway/positions.py;
    #: set by the session, which knows the owner)
    sign: Callable[[int, Positions], str] | None = None

    @property
    def pending(self) -> int:
        return len(self._latest) + self._queued

    def offer(self, channel: Channel, payload: bytes, now: float) -> bool:
        """Take one update; True if the writer should look at this subscription again.

        Raises:
            SlowClientError: a batched stream has twice ``max_pending`` updates unsent.
        """
        return self.offer_many(channel, [payload], now)

    def offer_many(self, channel: Channel, payloads: list[bytes], now: float) -> bool:
        """Take ``payloads`` (one channel, oldest first) in one call: the hub's fan-out path,
        so that its cost per subscriber is per channel and batch, not per record. True if the
        writer should look at this subscription again. ``payloads`` is not kept mutable: the
        hub shares it between subscribers.

        Raises:
            SlowClientError: a batched stream has twice ``max_pending`` updates unsent.
        """
        was_empty = not self._latest and not self._queued
        if self.spec.batched:
            self._queue.append((channel, payloads))
            self._queued += len(payloads)
            if self._queued >= 2 * self.max_pending:
                raise SlowClientError(f"{self._queued} updates unsent on {self.id}")
            if self._queued >= self.max_pending:
                self._due_at = now  # flush early rather than grow
                return True
        elif self.mode == "realtime" and not self._latest:
            self._queue.append((channel, payloads))
            self._queued += len(payloads)
            if self._queued > self.max_pending:
                self._conflate_queue()
        else:
            if self.mode == "realtime":
                self.dropped += len(payloads) - 1 + (channel in self._latest)
            self._latest[channel] = payloads[-1]
        if was_empty:
            self._due_at = now if self.mode == "realtime" else self._last_flush + self.interval_s
            return True
        return False

    def _conflate_queue(self) -> None:
        # The client is behind: from here until the next flush, keep the newest payload of
        # each channel (in order of first arrival) and count the superseded ones as dropped.
        latest = self._latest
        for channel, payloads in self._queue:
            latest[channel] = payloads[-1]
        self.dropped += self._queued - len(latest)
        self.conflations += 1
        self._queue = []
        self._queued = 0

    def begin(self, now: float) -> None:
        """The subscription was acknowledged at ``now``: in conflated mode its first data
        message (the snapshot, or live updates) is due one interval later, never sooner. This
        is the seed's order: a client that sends its next request right after an ack reads that
        request's ack next, not data. Real-time mode sends as updates arrive."""
        self._last_flush = now

    def due(self) -> float | None:
        """Monotonic time at which this subscription has something to send, or None."""
        if self.held or not (self._latest or self._queue):
            return None
        return self._due_at

    def take(self, now: float) -> list[bytes]:
        """The pending payloads, in arrival order, and reset (the caller sends them)."""
        items = [p for _, payloads in self._queue for p in payloads]
        if self._latest:
            items += self._latest.values()
            self._latest = {}
        self._queue = []
        self._queued = 0
        self._last_flush = now
        return items

    def collect_counts(self) -> tuple[int, int]:
        """``(dropped, conflations)`` since the last call, and reset them (for the metrics)."""
        counts = (self.dropped, self.conflations)
        self.dropped = self.conflations = 0
        return counts

    def next_seq(self) -> int:
        """Number the next data message."""
        self.seq += 1
        return self.seq

    def token(self, positions: Positions) -> str | None:
        """The resume token of the message just numbered (``seq``), made when the topic stood
        at ``positions``; None for a bounded replay, which cannot be resumed."""
        if self.sign is None or not self.live:
            return None
        return self.sign(self.seq, positions)

    def clear(self) -> None:
        """Drop pending updates (the subscription ended)."""
        self._queue = []
        self._queued = 0
        self._latest = {}
