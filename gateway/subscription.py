"""One subscription's state: pending updates, conflation, sequence numbers. Pure, no I/O.

The hub calls ``offer`` for every record of a subscribed channel (synchronously, never
waiting); the connection's writer asks ``due`` / ``take`` when to send and what. Memory is
bounded whatever the client does:

* ``conflated`` mode keeps the latest payload per channel (at most one per symbol) and is
  flushed at most once per ``interval_ms``;
* ``realtime`` mode keeps every payload and is flushed as soon as the writer runs; past
  ``max_pending`` it falls back to conflation until the next flush (counted as drops);
* batched streams (trades, raw ticks) keep every payload, flushed once per interval, or at once
  when ``max_pending`` is reached; past twice that the client is too slow (``SlowClientError``).

Each flushed message takes the next ``seq`` and remembers the hub's Kafka positions at that
moment, so that a client resuming from ``seq`` can be sent exactly what came after.
"""

from __future__ import annotations

from collections import deque
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
    history_size: int = 256
    seq: int = 0
    #: While a replay or resume catch-up runs, live updates are kept (bounded) but not sent.
    held: bool = False
    #: A bounded replay (``replay_to``) gets no live updates at all.
    live: bool = True
    dropped: int = 0
    _latest: dict[Channel, bytes] = field(default_factory=dict)
    _queue: list[bytes] = field(default_factory=list)
    _due_at: float = 0.0
    _last_flush: float = float("-inf")
    _history: deque[tuple[int, Positions]] = field(default_factory=deque)

    @property
    def pending(self) -> int:
        return len(self._latest) + len(self._queue)

    def offer(self, channel: Channel, payload: bytes, now: float) -> bool:
        """Take one update; True if the writer should look at this subscription again.

        Raises:
            SlowClientError: a batched stream has twice ``max_pending`` updates unsent.
        """
        was_empty = not self._latest and not self._queue
        if self.spec.batched:
            self._queue.append(payload)
            if len(self._queue) >= 2 * self.max_pending:
                raise SlowClientError(f"{len(self._queue)} updates unsent on {self.id}")
            if len(self._queue) >= self.max_pending:
                self._due_at = now  # flush early rather than grow
                return True
        elif self.mode == "realtime" and not self._latest:
            self._queue.append(payload)
            if len(self._queue) > self.max_pending:
                self._conflate_queue(channel)
        else:
            if channel in self._latest:
                self.dropped += self.mode == "realtime"
            self._latest[channel] = payload
        if was_empty:
            self._due_at = now if self.mode == "realtime" else self._last_flush + self.interval_s
            return True
        return False

    def offer_many(self, channel: Channel, payloads: list[bytes], now: float) -> bool:
        """``offer`` each of ``payloads`` (one channel, oldest first) in one call: the hub's
        fan-out path, so that its cost per subscriber is per channel, not per record.

        Raises:
            SlowClientError: as ``offer``.
        """
        if len(payloads) == 1:
            return self.offer(channel, payloads[0], now)
        was_empty = not self._latest and not self._queue
        if self.spec.batched:
            self._queue.extend(payloads)
            if len(self._queue) >= 2 * self.max_pending:
                raise SlowClientError(f"{len(self._queue)} updates unsent on {self.id}")
            if len(self._queue) >= self.max_pending:
                self._due_at = now
                return True
        elif self.mode == "realtime" and not self._latest:
            self._queue.extend(payloads)
            if len(self._queue) > self.max_pending:
                self._conflate_queue(channel)
        else:
            if self.mode == "realtime":
                self.dropped += len(payloads) - 1 + (channel in self._latest)
            self._latest[channel] = payloads[-1]
        if was_empty:
            self._due_at = now if self.mode == "realtime" else self._last_flush + self.interval_s
            return True
        return False

    def _conflate_queue(self, channel: Channel) -> None:
        # The queue holds payloads without their channels; keep only the newest, which is the
        # one just offered, and count the rest as dropped. The client is behind: the latest
        # value is what it needs.
        self.dropped += len(self._queue) - 1
        payload = self._queue[-1]
        self._queue.clear()
        self._latest[channel] = payload

    def due(self) -> float | None:
        """Monotonic time at which this subscription has something to send, or None."""
        if self.held or not (self._latest or self._queue):
            return None
        return self._due_at

    def take(self, now: float) -> list[bytes]:
        """The pending payloads, in arrival order, and reset (the caller sends them)."""
        items = self._queue + list(self._latest.values()) if self._latest else self._queue
        self._queue = []
        self._latest = {}
        self._last_flush = now
        return items

    def start_at(self, positions: Positions) -> None:
        """Remember where the topic stood when the subscription began (``resume_from: 0``)."""
        self._history.clear()
        self._history.append((self.seq, positions))

    def next_seq(self, positions: Positions) -> int:
        """Number the next data message and remember where the topic stood when it was made."""
        self.seq += 1
        self._history.append((self.seq, positions))
        while len(self._history) > self.history_size:
            self._history.popleft()
        return self.seq

    def positions_after(self, seq: int) -> Positions | None:
        """The positions recorded with message ``seq``, or None if no longer (or never) known."""
        for number, positions in reversed(self._history):
            if number == seq:
                return positions
            if number < seq:
                break
        return None

    def rewind(self, seq: int) -> None:
        """Continue numbering after ``seq`` (a resumed client saw nothing later)."""
        while self._history and self._history[-1][0] > seq:
            self._history.pop()
        self.seq = seq

    def clear(self) -> None:
        """Drop pending updates (the subscription is parked or closed)."""
        self._queue = []
        self._latest = {}
