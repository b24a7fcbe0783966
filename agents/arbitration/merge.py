"""The merge rule: one deterministic order for the ticks and the trades of a partition.

A symbol's ticks and trades live in partitions of the same number of two topics, and a consumer
sees the two interleaved however the fetches happened to return them. The arbitration state
depends on the order of its inputs (a trade is a price print, a volume, and moves the
watermark), so the order must not depend on fetching. The rule is the classic two-way merge:

* each topic-partition's records are queued in offset order;
* while both queues have a head, the head with the smaller ``(event_time_ms, kind, offset)``
  goes first (``kind``: ticks before trades at equal times);
* when one queue is empty, the other's head waits, unless the empty side is *caught up*
  (its consumer has every record the broker has: position = high watermark), in which case it
  goes.

The order is then a pure function of the two record sequences whenever the empty-side escape
is not taken before a record is appended to that side: always in a rebuild (the raw topics are
complete up to the captured end offsets) and in live operation unless a raw record reaches the
broker after a record of the other topic with a later merge key was already processed — the
same boundary as any event-time system's late data. Held records are part of the saved state
(the partition's mark) so that a crash never loses them, and ``admitted`` (the last offset
taken per topic) makes a replay skip what the queues or the state already hold.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

__all__ = ["Held", "MergeQueues"]

TICKS, TRADES = "fiml.raw.ticks", "fiml.raw.trades"
_RANK = {TICKS: 0, TRADES: 1}

#: (event time, offset, raw value, decoded record or None) of a record waiting for its turn
Held = tuple[int, int, bytes, object]


@dataclass(slots=True)
class MergeQueues:
    """The two queues of one partition."""

    ticks: deque[Held] = field(default_factory=deque)
    trades: deque[Held] = field(default_factory=deque)
    admitted: dict[str, int] = field(default_factory=dict)  # kind -> last offset queued

    def admit(self, kind: str, event_time_ms: int, offset: int, value: bytes,
              record: object = None) -> bool:
        """Queue a record; False if its offset was already admitted (a replay)."""
        if offset <= self.admitted.get(kind, -1):
            return False
        self.admitted[kind] = offset
        queue = self.ticks if kind == TICKS else self.trades
        queue.append((event_time_ms, offset, value, record))
        return True

    def take(self, kind: str, offset: int) -> bool:
        """``admit`` then ``release`` of a record when both queues are empty (the record would
        come straight back), without queueing it; False if its offset was already admitted."""
        if offset <= self.admitted.get(kind, -1):
            return False
        self.admitted[kind] = offset
        return True

    def release(self, caught_up: Callable[[str], bool],
                ) -> Iterator[tuple[str, int, bytes, object]]:
        """(kind, offset, value, record) in merge order, as far as the rule allows."""
        ticks, trades = self.ticks, self.trades
        while ticks or trades:
            if ticks and trades:
                a, b = ticks[0], trades[0]
                kind = TICKS if (a[0], 0, a[1]) <= (b[0], 1, b[1]) else TRADES
            elif ticks:
                if not caught_up(TRADES):
                    return
                kind = TICKS
            else:
                if not caught_up(TICKS):
                    return
                kind = TRADES
            _t, offset, value, record = (ticks if kind == TICKS else trades).popleft()
            yield kind, offset, value, record

    def to_list(self) -> list[object]:
        return [[[t, o, v.decode()] for t, o, v, _r in self.ticks],
                [[t, o, v.decode()] for t, o, v, _r in self.trades], self.admitted]

    @classmethod
    def from_list(cls, d: list[object]) -> MergeQueues:
        ticks, trades, admitted = d
        return cls(deque((int(t), int(o), str(v).encode(), None) for t, o, v in ticks),  # type: ignore[attr-defined]
                   deque((int(t), int(o), str(v).encode(), None) for t, o, v in trades),  # type: ignore[attr-defined]
                   dict(admitted))  # type: ignore[call-overload]
