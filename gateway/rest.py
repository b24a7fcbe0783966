"""REST reads for clients that poll: candles from the retained ``fiml.ohlcv`` topic."""

from __future__ import annotations

import time
from typing import Any

from gateway.errors import RangeReadError
from gateway.service import Gateway
from schemas.codec import decode
from schemas.errors import DecodeError
from schemas.records import Interval, OHLCVUpdate

__all__ = ["read_candles"]

DAY_MS = 86_400_000


async def read_candles(
    gateway: Gateway, symbol: str, interval: Interval, start: int | None, end: int | None
) -> dict[str, Any]:
    """The latest revision of each ``interval`` candle of ``symbol`` whose window starts in
    ``[start, end)`` (default: the last 24 hours), oldest first, at most ``max_candles``.
    ``retained_from`` is set when retention deleted the start of the range: candles before it
    may be missing.

    Raises:
        HTTPException: 503 if the topic cannot be read, 422 if ``end <= start``.
    """
    from fastapi import HTTPException

    now = time.time_ns() // 1_000_000
    end = now + 1 if end is None else end
    start = end - DAY_MS if start is None else start
    if end <= start:
        raise HTTPException(422, "end must be after start")
    windows: dict[int, OHLCVUpdate] = {}
    try:
        async with gateway.hub.reader("fiml.ohlcv") as reader:
            # A revision's timestamp (its event time) is >= its window's start, so every
            # revision of the windows wanted lies after offsets_at(start).
            begin = await reader.offsets_at(start)
            stop = await reader.end_offsets()
            # Retention may have deleted the start of the range: say from when it is whole.
            late = await reader.deleted_after(start)
            async for messages in reader.read(begin, stop):
                for m in messages:
                    if m.key is not None and m.key.decode() != symbol:
                        continue
                    try:
                        candle = decode(OHLCVUpdate, m.value)
                    except DecodeError:
                        continue
                    if candle.symbol != symbol or candle.interval is not interval:
                        continue
                    if not start <= candle.window_start_ms < end:
                        continue
                    held = windows.get(candle.window_start_ms)
                    if held is None or (candle.is_final, candle.rev) >= (held.is_final, held.rev):
                        windows[candle.window_start_ms] = candle
    except (RangeReadError, StopIteration) as exc:
        raise HTTPException(503, f"cannot read candles: {exc}") from None
    ordered = [windows[k] for k in sorted(windows)]
    limit = gateway.settings.max_candles
    return {
        "symbol": symbol,
        "interval": interval.value,
        "start": start,
        "end": end,
        "truncated": len(ordered) > limit,
        "retained_from": max(late.values()) if late else None,
        "candles": [c.model_dump(mode="json") for c in ordered[:limit]],
    }
