"""Time on the wire: UTC epoch milliseconds for machines, ISO 8601 with a ``Z`` for people.

Records and messages keep integer epoch milliseconds (``event_time_ms``, ``timestamp_ms``)
because integers compare fast and never drift. The FIML seed's clients read ISO 8601 strings
(``2026-12-04T03:09:22.700Z``, parsed with ``datetime.fromisoformat(ts.replace("Z",
"+00:00"))``), so every record and message also carries one, made here from the integer.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from functools import lru_cache

__all__ = ["MAX_EPOCH_MS", "iso_ms", "parse_iso_ms"]

#: 9999-12-31T23:59:59.999Z: the last instant a four-digit ISO 8601 year can write. Every time
#: field is bounded by it, so that every one of them has an ISO form.
MAX_EPOCH_MS = 253_402_300_799_999

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@lru_cache(maxsize=1024)
def _second(second: int) -> str:
    t = time.gmtime(second)
    return (
        f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}"
        f"T{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}."
    )


def iso_ms(epoch_ms: int) -> str:
    """``epoch_ms`` as ISO 8601 UTC with milliseconds and a ``Z``: ``2026-12-04T03:09:22.700Z``.

    Records of one second share their prefix (cached), so this is a dict hit and one format in
    the arbitration's hot path.

    Raises:
        ValueError: ``epoch_ms`` is negative or after ``MAX_EPOCH_MS``.
    """
    if not 0 <= epoch_ms <= MAX_EPOCH_MS:
        raise ValueError(f"{epoch_ms} is outside 0..{MAX_EPOCH_MS} (1970 to 9999, UTC ms)")
    second, milli = divmod(epoch_ms, 1000)
    return f"{_second(second)}{milli:03d}Z"


def parse_iso_ms(text: str) -> int:
    """An ISO 8601 datetime with a UTC offset (``Z`` or ``+hh:mm``) as epoch milliseconds.

    A datetime without an offset is refused rather than assumed UTC: guessing a time zone would
    read the wrong hours silently. Sub-millisecond digits are floored.

    Raises:
        ValueError: not ISO 8601, or no offset.
    """
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError("expected epoch milliseconds or an ISO-8601 datetime") from None
    if parsed.tzinfo is None:
        raise ValueError("ISO-8601 datetime needs a UTC offset, e.g. 2024-01-01T00:00:00Z")
    # Integer arithmetic: float timestamp() * 1000 can land one ms short.
    return (parsed - _EPOCH) // timedelta(milliseconds=1)
