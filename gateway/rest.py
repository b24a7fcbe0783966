"""REST reads for clients that poll: candles of the retained ``fiml.ohlcv`` topic.

``GET /ohlcv/{symbol}`` answers the latest revision of each candle whose window starts in
``[start, end)`` (``answer_candles``). A gateway answers from its candle index
(gateway/candle_index.py, fed by gateway/candle_feed.py): one range read of the series,
whatever the topic's size. Without one (``candle_index = "off"``, or an index that failed) it
scans the topic (``read_candles``), which is also the benchmark's baseline. The scan's cost is
bounded three ways:

* what it accepts: ``0 <= start < end <= MAX_EPOCH_MS``, at most ``MAX_RANGE_MS`` apart
  (``candle_range``); anything else is a 422, never a 500;
* what it holds: at most ``max_candles`` windows, the newest ones (``NewestCandles``). A longer
  range answers its newest candles with ``truncated: true`` and ``next_end``: asking again with
  ``end=next_end`` pages back to older ones;
* what it reads: from the first record that can belong to the range to the record that closes
  it (``_read_range``), or the topic's end when nothing has closed it yet (the range reaches
  the present, or the worker has not finalised its last window).

A broker that cannot be reached, or a topic that cannot be read, is a 503 with the reason.
"""

from __future__ import annotations

import heapq
import math
import time
from contextlib import aclosing
from typing import Any

import orjson
from aiokafka.errors import KafkaError
from fastapi import HTTPException, Response

from gateway.candle_feed import IndexBehind
from gateway.candle_index import Answer
from gateway.errors import RangeReadError
from gateway.history import TopicReader
from gateway.service import Gateway
from schemas.codec import decode
from schemas.errors import DecodeError
from schemas.records import Interval, OHLCVUpdate
from schemas.times import MAX_EPOCH_MS

__all__ = [
    "DAY_MS",
    "MAX_RANGE_MS",
    "NewestCandles",
    "answer_candles",
    "candle_limit",
    "candle_range",
    "candles_json",
    "read_candles",
]

DAY_MS = 86_400_000
#: The longest range one request may ask for. Memory does not depend on it (``max_candles``
#: does that); it keeps a typo (seconds for milliseconds, a missing digit) from being a read of
#: the whole topic, and is longer than any retention the derived topics have (7 days).
MAX_RANGE_MS = 366 * DAY_MS
#: How long before its event time a record may be published. Ingestion refuses an event time
#: more than ``FIML_MAX_AHEAD_MS`` (5 minutes by default) after its ingest time, and a candle
#: revision is published after the raw record that made it was ingested, so its Kafka timestamp
#: (set by the worker's producer at send) is at least its event time minus this, and its window
#: start minus this.
EARLY_PUBLICATION_MS = 300_000

_TOPIC = "fiml.ohlcv"
# Every failure of the broker or the read, as the reader and aiokafka raise them: a refused or
# lost connection, a request that timed out (``TimeoutError`` is an ``OSError``), a range that
# retention deleted under the read, no progress within the reader's timeout.
_UNAVAILABLE = (RangeReadError, KafkaError, OSError)
#: The longest ``Retry-After`` a 503 of a building index says (seconds): past it the estimate
#: is worth asking again.
MAX_RETRY_AFTER_S = 600


def candle_range(start: int | None, end: int | None, now_ms: int) -> tuple[int, int]:
    """``(start, end)`` of a request, defaults filled: ``end`` now (inclusive of this
    millisecond), ``start`` a day before ``end`` (not before 1970).

    Raises:
        ValueError: a bound outside ``0..MAX_EPOCH_MS``, ``end <= start``, or a range longer
            than ``MAX_RANGE_MS``; the message says which, for the client.
    """
    for name, value in (("start", start), ("end", end)):
        if value is not None and not 0 <= value <= MAX_EPOCH_MS:
            raise ValueError(f"{name} must be epoch milliseconds in 0..{MAX_EPOCH_MS}")
    end = min(now_ms + 1, MAX_EPOCH_MS) if end is None else end
    start = max(0, end - DAY_MS) if start is None else start
    if end <= start:
        raise ValueError(f"end ({end}) must be after start ({start})")
    if end - start > MAX_RANGE_MS:
        raise ValueError(
            f"the range is {end - start} ms: at most {MAX_RANGE_MS} ms (366 days) a request; "
            "ask for shorter ranges"
        )
    return start, end


def candle_limit(limit: int | None, max_candles: int) -> int:
    """The candles a request may be answered: ``limit`` (default ``max_candles``).

    Raises:
        ValueError: ``limit`` outside ``1..max_candles``; the message says so, for the client.
    """
    if limit is None:
        return max_candles
    if not 1 <= limit <= max_candles:
        raise ValueError(f"limit must be in 1..{max_candles} (this gateway's max_candles)")
    return limit


async def answer_candles(
    gateway: Gateway,
    symbol: str,
    interval: Interval,
    start: int | None,
    end: int | None,
    limit: int | None = None,
) -> Response:
    """``GET /ohlcv``: the body ``read_candles`` describes, from the gateway's candle index
    when it has one (else by ``read_candles``'s scan), as JSON.

    Raises:
        HTTPException: 422 for a bad range or limit; 503 if the topic's offsets cannot be had
            or the topic cannot be read, and 503 with ``Retry-After`` while the index has not
            read as far as the request needs (candle_feed.py, "Freshness").
    """
    try:
        start, end = candle_range(start, end, time.time_ns() // 1_000_000)
        limit = candle_limit(limit, gateway.settings.max_candles)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None
    feed = gateway.candles
    if feed is None or not feed.serving:
        scanned = await read_candles(gateway, symbol, interval, start, end, limit)
        return Response(orjson.dumps(scanned), media_type="application/json")
    try:
        answer = await feed.answer(symbol, interval.value, start, end, limit)
    except IndexBehind as exc:
        wait = min(MAX_RETRY_AFTER_S, max(1, math.ceil(exc.retry_after_s)))
        raise HTTPException(503, str(exc), headers={"Retry-After": str(wait)}) from None
    except _UNAVAILABLE as exc:
        raise HTTPException(503, f"cannot read candles: {_reason(exc)}") from None
    found = candles_json(symbol, interval, start, end, answer)
    return Response(found, media_type="application/json")


def candles_json(symbol: str, interval: Interval, start: int, end: int, answer: Answer) -> bytes:
    """The response body of an index answer: the records are spliced in as stored (the
    model's encoding, as the scan answers them), not parsed and written again."""
    head = orjson.dumps(
        {
            "symbol": symbol,
            "interval": interval.value,
            "start": start,
            "end": end,
            "truncated": answer.truncated,
            "next_end": answer.next_end,
            "retained_from": answer.retained_from,
        }
    )
    return b"".join((head[:-1], b',"candles":[', b",".join(answer.records), b"]}"))


class NewestCandles:
    """The latest revision of each window of one series, for at most ``limit`` windows: the
    newest ones. Memory is O(limit) whatever the number of records folded in."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit}")
        self.limit = limit
        #: A window older than every one held was left out: there are more than ``limit``.
        self.truncated = False
        self._held: dict[int, OHLCVUpdate] = {}
        # The keys of _held as a min-heap: the window to give up when a newer one comes.
        self._starts: list[int] = []

    def add(self, candle: OHLCVUpdate) -> None:
        """Fold in one revision; of a window's revisions the final one wins, then the highest
        ``rev``, then the one added last."""
        start = candle.window_start_ms
        held = self._held.get(start)
        if held is not None:
            if (candle.is_final, candle.rev) >= (held.is_final, held.rev):
                self._held[start] = candle
            return
        if len(self._held) == self.limit:
            # Windows are never forgotten once seen, so ``limit`` newer ones than this one
            # exist: it cannot be among the newest, now or later.
            self.truncated = True
            if start < self._starts[0]:
                return
            del self._held[heapq.heappop(self._starts)]
        self._held[start] = candle
        heapq.heappush(self._starts, start)

    def candles(self) -> list[OHLCVUpdate]:
        """The windows held, oldest first."""
        return [self._held[s] for s in sorted(self._held)]


async def read_candles(
    gateway: Gateway,
    symbol: str,
    interval: Interval,
    start: int | None,
    end: int | None,
    limit: int | None = None,
) -> dict[str, Any]:
    """The latest revision of each ``interval`` candle of ``symbol`` whose window starts in
    ``[start, end)`` (default: the last 24 hours), oldest first: the newest ``limit`` (default
    ``max_candles``) of them, read by scanning the topic. ``truncated`` says that older ones
    were left out, and ``next_end`` (the oldest ``window_start_ms`` answered) is the ``end``
    that asks for them. ``retained_from`` is set when retention deleted the start of the range:
    candles before it may be missing.

    Raises:
        HTTPException: 422 for a bad range (``candle_range``) or limit (``candle_limit``), 503
            if the topic cannot be read.
    """
    try:
        start, end = candle_range(start, end, time.time_ns() // 1_000_000)
        limit = candle_limit(limit, gateway.settings.max_candles)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None
    if _TOPIC not in gateway.settings.topics:
        raise HTTPException(503, f"this gateway does not read {_TOPIC}")
    held = NewestCandles(limit)
    try:
        async with gateway.hub.reader(_TOPIC) as reader:
            # Retention may have deleted the start of the range: say from when it is whole.
            late = await reader.deleted_after(start)
            await _read_range(reader, symbol, interval, start, end, held)
    except _UNAVAILABLE as exc:
        raise HTTPException(503, f"cannot read candles: {_reason(exc)}") from None
    candles = held.candles()
    return {
        "symbol": symbol,
        "interval": interval.value,
        "start": start,
        "end": end,
        "truncated": held.truncated,
        "next_end": candles[0].window_start_ms if held.truncated else None,
        "retained_from": max(late.values()) if late else None,
        "candles": [c.model_dump(mode="json") for c in candles],
    }


async def _read_range(
    reader: TopicReader,
    symbol: str,
    interval: Interval,
    start: int,
    end: int,
    held: NewestCandles,
) -> None:
    """Fold every revision of the range into ``held``.

    Where to start: a revision's Kafka timestamp is at least its window start minus
    ``EARLY_PUBLICATION_MS``, and ``offsets_at`` finds, per partition, the first record stamped
    at or after a time, every record before it stamped earlier: none of them is in the range.

    Where to stop: not at a Kafka timestamp. The worker's producer stamps records when it sends
    them, and a window's final revision is sent when the partition's watermark passes the
    window's end plus the grace period: a moment later while ticks flow, but after a quiet night
    (an equity's last window of the day), a worker outage, or ``fiml rebuild`` (every record
    stamped at rebuild time), hours or days after ``end``. And the timestamps of one partition
    need not increase, so records after ``offsets_at(t)`` may still be stamped before ``t``.
    Any margin after ``end`` would miss revisions, silently. What does bound the range is the
    worker's order (docs/ARBITRATION.md, Candles): a symbol's windows of one interval are made
    final in window order, exactly once, and a window already final is never revised (a later
    price is dropped as late). Once the final of the range's last window, or of a later one,
    has been read, no record after it can change the answer. Until then, the read goes on to the
    topic's end as it was when the read began: the range reaches the present, or the worker has
    not closed its last window yet, and the end is near.
    """
    last_window = interval.window_start(end - 1)
    begin = await reader.offsets_at(max(0, start - EARLY_PUBLICATION_MS))
    stop = await reader.end_offsets()
    key = symbol.encode()
    batches = reader.read(begin, stop)
    async with aclosing(batches):  # closed before the reader's consumer is
        async for batch in batches:
            closed = False
            for m in batch:
                candle = _candle(m, key, symbol, interval)
                if candle is None:
                    continue
                closed = closed or (candle.is_final and candle.window_start_ms >= last_window)
                if start <= candle.window_start_ms < end:
                    held.add(candle)
            # The rest of the batch is folded in first: a batch is sorted by timestamp, so the
            # closing final may come before records of its partition at lower offsets.
            if closed:
                return


def _candle(message: Any, key: bytes, symbol: str, interval: Interval) -> OHLCVUpdate | None:
    """The record as a candle of ``symbol`` and ``interval``, or None: another series, a
    tombstone, or bytes that do not decode (skipped, as the hub skips them)."""
    if message.value is None or (message.key is not None and message.key != key):
        return None
    try:
        candle = decode(OHLCVUpdate, message.value)
    except DecodeError:
        return None
    if candle.symbol != symbol or candle.interval is not interval:
        return None
    return candle


def _reason(exc: BaseException) -> str:
    # Some Kafka errors (timeouts) have no message: their class names them.
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
