"""Writing topic records for analysis (JSON Lines, CSV) and reading time arguments (pure)."""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable
from datetime import datetime, timezone
from typing import Any, TextIO

import orjson

__all__ = ["parse_time", "write_csv", "write_jsonl"]

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


def write_jsonl(rows: Iterable[dict[str, Any]], out: TextIO) -> int:
    """One JSON object a line; returns the number written."""
    count = 0
    for row in rows:
        out.write(orjson.dumps(row).decode() + "\n")
        count += 1
    return count


def _cell(value: Any) -> Any:
    # Lists (providers_used, flags) stay one cell: JSON is unambiguous and spreadsheet-safe.
    return orjson.dumps(value).decode() if isinstance(value, list | dict) else value


def write_csv(rows: Iterable[dict[str, Any]], out: TextIO) -> int:
    """CSV with a header; columns are the keys in order of first appearance.

    All rows are held in memory to learn the columns, so a header never misses one.
    """
    held = list(rows)
    columns: dict[str, None] = {}
    for row in held:
        columns.update(dict.fromkeys(row))
    writer = csv.DictWriter(out, fieldnames=list(columns), extrasaction="ignore")
    writer.writeheader()
    for row in held:
        writer.writerow({k: _cell(v) for k, v in row.items()})
    return len(held)
