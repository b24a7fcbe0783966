"""Catch-up from the retained topic: replay of a time range, and resume after a reconnect.

Both read ``[starts, ends)`` of the subscription's topic with a short-lived consumer, keep the
records of the subscription's channels, and send them in batches (``catchup_batch`` records a
data message, numbered like any other; JSON, or msgpack on a binary connection) through the
connection's outbox, waiting for room, so a slow client slows only its own catch-up. Every
catch-up of the gateway shares one replay budget of loop time (gateway/budget.py), so live
messages go out between two slices of replay and many replays take turns. ``ends`` is the
hub's position when the subscription was attached: the hub holds (bounded) every live record
from there on until the catch-up is done, so the hand-over has no gap and no duplicate.

Replay ranges are on each record's own ``event_time_ms``: ``replay_from <= event_time_ms <
replay_to``. The Kafka record timestamp only finds where to start and stop reading
(``offsets_for_times``), widened by ``replay_margin_ms`` on both sides, because FIML's producers
leave it to the producer's clock at send time (publication time, a little after the event time,
or long after it for a stale provider quote). A record published more than the margin after its
event time is outside a bounded replay's read window and is missed (docs/WEBSOCKET.md). A
replay whose start was deleted by retention is refused (REPLAY_ERROR), not shortened silently.
"""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack, aclosing
from typing import TYPE_CHECKING, Any

from gateway.channels import parse_slice, route_parsed
from gateway.connection import Connection, now_ms
from gateway.errors import RangeReadError, SlowClientError
from gateway.subscription import Subscription
from schemas.codec import encode
from schemas.errors import DecodeError, ProtocolError
from schemas.protocol import ErrorCode, ReplayComplete, SubscribeRequest
from schemas.times import iso_ms

if TYPE_CHECKING:
    from gateway.session import Session

__all__ = ["catch_up"]


async def catch_up(
    session: Session,
    sub: Subscription,
    starts: tuple[int, ...] | None,
    ends: tuple[int, ...] | None,
    request: SubscribeRequest | None,
) -> None:
    """Send ``sub`` what it asked for from history, then release its live updates.

    ``request`` is the replay request (None for a resume, where ``starts`` is given). A range
    that cannot be read is reported to the client (REPLAY_ERROR / RESUME_UNAVAILABLE).
    """
    conn = session.conn
    settings = session.settings
    hub = session.hub
    lo_ms = request.replay_from if request is not None else None
    hi_ms = request.replay_to if request is not None else None
    speed = request.replay_speed if request is not None else None
    sent = 0
    if request is None and starts is not None and starts == ends:
        # a resume with nothing missed: straight to live. (No reader either: aiokafka 0.14
        # stopped right after it started can leak a cancellation into this task.)
        sub.held = False
        conn.wake()
        return
    try:
        async with hub.reader(sub.spec.topic) as reader, AsyncExitStack() as stack:
            margin = settings.replay_margin_ms
            if lo_ms is not None:
                begin = await reader.offsets_at(max(0, lo_ms - margin))
                _check_retained(sub.spec.topic, await reader.deleted_after(lo_ms))
            else:
                begin = dict(enumerate(starts or ()))
            if ends is not None:
                end = dict(enumerate(ends))
            elif hi_ms is not None:
                end = await reader.offsets_at(hi_ms + margin)
            else:  # pragma: no cover - every caller gives one or the other
                end = await reader.end_offsets()
            cut = _Cut(
                sub=sub,
                conn=conn,
                cur=[begin.get(p, 0) for p in range(max([*begin, *end, -1]) + 1)],
                lo_ms=lo_ms,
                hi_ms=hi_ms,
                speed=speed,
                size=settings.catchup_batch,
                # The format at subscribe, for the whole catch-up: a ``hello`` switching
                # formats meanwhile applies to live data after it, never to half a replay.
                binary=conn.binary,
            )
            budget = session.replay_budget
            # closed before the reader's consumer is, however the catch-up ends
            fetches = await stack.enter_async_context(aclosing(reader.read(begin, end)))
            fetch: list[Any] = []
            records: list[Any] | None = None
            at = 0  # the next record of ``fetch`` to look at
            while True:
                if at == len(fetch):
                    # Outside the turn: a wait for the broker holds up no other replay.
                    fetch, records, at = await anext(fetches, []), None, 0
                    if not fetch:
                        break
                # One turn: up to a frame's worth of records. Turns are the replay budget's:
                # one replay at a time, one turn per pass of the event loop, so live messages
                # go out between two turns.
                async with budget.turn():
                    if records is None:
                        records = parse_slice([m.value for m in fetch])
                    at, delay = cut.take(fetch, records, at)
                for frame, count in cut.ready:
                    await conn.put_wait(frame, count, cut.binary)
                cut.ready.clear()
                if delay > 0:
                    await asyncio.sleep(delay)  # pacing, not synchronisation
            cut.frame()
            for frame, count in cut.ready:
                await conn.put_wait(frame, count, cut.binary)
            sent = cut.sent
        if request is not None:
            done = ReplayComplete(timestamp_ms=now_ms(), subscription_id=sub.id, records=sent)
            await conn.put_wait(encode(done), 0)
    except SlowClientError:
        return
    except RangeReadError as exc:
        code = ErrorCode.REPLAY_ERROR if request is not None else ErrorCode.RESUME_UNAVAILABLE
        field = "replay_from" if request is not None else "resume_from"
        session.catch_up_failed(sub, ProtocolError(code, str(exc), field))
        return
    sub.held = False
    conn.wake()


class _Cut:
    """What a catch-up keeps of the records it reads, and the data messages it makes of them
    (``ready``, to be queued by the caller outside the budget's turn)."""

    def __init__(
        self,
        sub: Subscription,
        conn: Connection,
        cur: list[int],
        lo_ms: int | None,
        hi_ms: int | None,
        speed: float | None,
        size: int,
        binary: bool,
    ) -> None:
        self.sub, self.conn, self.binary, self.size = sub, conn, binary, size
        self.cur = cur  # per partition, the offset after the last record looked at
        self.lo_ms, self.hi_ms, self.speed = lo_ms, hi_ms, speed
        self.wanted = set(sub.spec.channels)
        self.sent = 0
        self.ready: list[tuple[bytes, int]] = []  # (data message, records in it)
        self._batch: list[bytes] = []
        self._parsed: list[Any] = []  # the same records, parsed (what a msgpack frame packs)
        self._clock = asyncio.get_running_loop().time
        self._started = self._clock()
        self._first_ms: int | None = None

    def take(self, fetch: list[Any], records: list[Any], at: int) -> tuple[int, float]:
        """Look at ``fetch[at:]`` (``records``: the same, parsed) until a data message is
        full, or a paced replay must wait before the next record. Returns where it stopped and
        how long to wait (0: none)."""
        topic = self.sub.spec.topic
        stop = len(fetch)
        while at < stop:
            m, record = fetch[at], records[at]
            try:
                channel = route_parsed(topic, record)
            except DecodeError:
                channel = None  # the hub logs and counts these; replay skips them too
            if channel is not None and channel in self.wanted:
                event_ms = record.get("event_time_ms")
                if not isinstance(event_ms, int):
                    event_ms = m.timestamp
                if self.lo_ms is None or (
                    self.lo_ms <= event_ms and (self.hi_ms is None or event_ms < self.hi_ms)
                ):
                    delay = self._pace(event_ms)
                    if delay > 0:
                        self.frame()
                        return at, delay  # this record again after the wait
                    self._batch.append(m.value)
                    if self.binary:
                        self._parsed.append(record)
                    self.sent += 1
            self.cur[m.partition] = m.offset + 1
            at += 1
            if len(self._batch) >= self.size:
                self.frame()
                break
        return at, 0.0

    def _pace(self, event_ms: int) -> float:
        if self.speed is None:
            return 0.0
        if self._first_ms is None:
            self._first_ms = event_ms
        due = self._started + (event_ms - self._first_ms) / 1000 / self.speed
        return due - self._clock()

    def frame(self) -> None:
        """The records kept so far as one data message, with the position after them."""
        if self._batch:
            frame = self.conn.frame_for(
                self.sub, self._batch, tuple(self.cur), self._parsed, self.binary
            )
            self.ready.append((frame, len(self._batch)))
            self._batch = []
            self._parsed = []


def _check_retained(topic: str, late: dict[int, int]) -> None:
    """A replay must not start before a partition's oldest record left (``late``: partition ->
    that record's timestamp, ``TopicReader.deleted_after``): the deleted ones may have been in
    the range, and a replay that silently starts later would look complete.

    Raises:
        RangeReadError: naming the time from which the whole topic is retained.
    """
    if late:
        since = max(late.values())
        raise RangeReadError(
            f"history of {topic} before {iso_ms(since)} ({since}) was deleted "
            f"by retention in partition(s) {', '.join(map(str, sorted(late)))}: replay from "
            f"there or later"
        )
