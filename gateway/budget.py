"""The replay budget: how replays and resumes share a gateway's event loop with live data.

A gateway serves live subscribers and catch-ups (replays, resumes) on one event loop. A
catch-up always has work ready: left alone it would run back to back with itself, several of
them would run one after another in the same pass of the loop, and a live message that arrived
meanwhile would wait for all of them. So a catch-up works in *turns* (a fetch from Kafka, or up
to a data message's worth of records), and turns are taken through this budget:

* one turn at a time in the whole gateway, and the next one only after a pass of the event
  loop (a turn holds the lock one pass longer than its work, and the lock hands over through a
  callback, run after the loop has polled its sockets): a live message waits for one turn at
  most, however many replays run;
* turns go round in order of asking (the lock's waiters are woken first come, first served):
  replays share fairly;
* the time turns take is paid to a token bucket that refills at ``share`` seconds a second,
  up to ``burst_s``; a turn that leaves it in debt waits the debt off before the next one. So
  replays together take at most ``share`` of the loop over any second. Loop time rather than
  records a second: a machine three times faster replays three times faster under the same
  setting.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable

__all__ = ["ReplayBudget"]


class ReplayBudget:
    """Loop time shared by every catch-up of one gateway process."""

    def __init__(
        self, share: float, burst_s: float = 0.02, clock: Callable[[], float] = time.perf_counter
    ) -> None:
        if not 0 < share <= 1:
            raise ValueError(f"share must be in (0, 1], not {share}")
        self.share = share
        self.burst_s = burst_s
        self._clock = clock
        self._tokens = burst_s
        self._at = clock()
        self._lock: asyncio.Lock | None = None  # made in the loop that uses it

    def charge(self, seconds: float) -> float:
        """Pay ``seconds`` of loop time; returns how long the payer must now wait (0: none)."""
        now = self._clock()
        self._tokens = min(self.burst_s, self._tokens + (now - self._at) * self.share) - seconds
        self._at = now
        return -self._tokens / self.share if self._tokens < 0 else 0.0

    @contextlib.asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        """One turn of a catch-up's work: CPU only (no waiting for the broker or the client
        inside: fetch before the turn, queue frames after it). Waits for the turns before it,
        then pays for its own."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            began = self._clock()
            try:
                yield
            except BaseException:
                self.charge(self._clock() - began)  # paid, but not waited for: it is ending
                raise
            wait = self.charge(self._clock() - began)
            # Held for one more pass of the loop at least (in debt: until it is paid, a few
            # ms at most since a turn is CPU only): another replay asking in this pass waits,
            # so the loop polls its sockets and runs what they made ready before the next turn.
            await asyncio.sleep(wait)
