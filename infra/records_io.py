"""``fiml replay``'s time arguments (pure). The records themselves are written by
``infra.export`` (JSON Lines, CSV, Parquet)."""

from __future__ import annotations

import re
from datetime import datetime, timezone

__all__ = ["parse_time"]

_RELATIVE = re.compile(r"^-(\d+(?:\.\d+)?)(ms|s|m|h|d)$")
_UNIT_MS = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def parse_time(text: str, now_ms: int) -> int:
    """Epoch ms from ``1718000000000``, ``-15m`` (before ``now_ms``), ``now`` or ISO-8601.

    A naive ISO time is taken as UTC, like every time in FIML Stream.

    Raises:
        ValueError: none of these forms.
    """
    text = text.strip()
    if text == "now":
        return now_ms
    if text.isdigit():
        return int(text)
    match = _RELATIVE.match(text)
    if match:
        return now_ms - int(float(match.group(1)) * _UNIT_MS[match.group(2)])
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)  # noqa: UP017 - reads better here
    return int(parsed.timestamp() * 1000)
