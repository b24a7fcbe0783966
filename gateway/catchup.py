"""Catch-up from the retained topic: replay of a time range, and resume after a reconnect.

Both read ``[starts, ends)`` of the subscription's topic with a short-lived consumer, keep the
records of the subscription's channels, and send them in batches (``catchup_batch`` records a
data message, numbered like any other) through the connection's outbox, waiting for room, so a
slow client slows only its own catch-up. ``ends`` is the hub's position when the subscription
was attached: the hub holds (bounded) every live record from there on until the catch-up is
done, so the hand-over has no gap and no duplicate.

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
from typing import TYPE_CHECKING

from gateway.channels import route
from gateway.connection import now_ms
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
        async with hub.reader(sub.spec.topic) as reader:
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
            cur = [begin.get(p, 0) for p in range(max([*begin, *end, -1]) + 1)]
            wanted = set(sub.spec.channels)
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            first_ts: int | None = None
            batch: list[bytes] = []

            async def flush() -> None:
                if batch:
                    frame = conn.frame_for(sub, batch, tuple(cur))
                    await conn.put_wait(frame, len(batch))
                    batch.clear()

            async for messages in reader.read(begin, end):
                for m in messages:
                    cur[m.partition] = m.offset + 1
                    try:
                        channel, record = route(sub.spec.topic, m.value)
                    except DecodeError:
                        continue  # the hub logs and counts these; replay skips them the same
                    event_ms = record.get("event_time_ms")
                    if not isinstance(event_ms, int):
                        event_ms = m.timestamp
                    if lo_ms is not None and (
                        event_ms < lo_ms or (hi_ms is not None and event_ms >= hi_ms)
                    ):
                        continue
                    if channel not in wanted:
                        continue
                    if speed is not None:
                        first_ts = event_ms if first_ts is None else first_ts
                        delay = t0 + (event_ms - first_ts) / 1000 / speed - loop.time()
                        if delay > 0:
                            await flush()
                            await asyncio.sleep(delay)  # pacing, not synchronisation
                    batch.append(m.value)
                    sent += 1
                    if len(batch) >= settings.catchup_batch:
                        await flush()
            await flush()
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
