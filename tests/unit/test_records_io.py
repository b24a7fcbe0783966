"""``fiml replay``'s pure parts: time arguments and the output formats."""

from __future__ import annotations

import csv
import io

import orjson
import pytest

from infra.records_io import parse_time, write_csv, write_jsonl

NOW = 1_718_000_000_000


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("now", NOW),
        ("1717999999000", 1_717_999_999_000),
        ("-15m", NOW - 900_000),
        ("-1.5s", NOW - 1_500),
        ("-2d", NOW - 2 * 86_400_000),
        ("2024-06-10T06:13:20Z", 1_718_000_000_000),
        ("2024-06-10T06:13:20", 1_718_000_000_000),  # naive means UTC
        ("2024-06-10T08:13:20+02:00", 1_718_000_000_000),
    ],
)
def test_parse_time(text: str, expected: int) -> None:
    assert parse_time(text, NOW) == expected


def test_parse_time_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        parse_time("yesterday-ish", NOW)


ROWS = [
    {"symbol": "AAPL", "price": 1.5, "providers_used": ["a", "b"]},
    {"symbol": "MSFT", "price": 2.0, "flags": ["stale"]},
]


def test_jsonl_round_trips() -> None:
    out = io.StringIO()
    assert write_jsonl(ROWS, out) == 2
    assert [orjson.loads(line) for line in out.getvalue().splitlines()] == ROWS


def test_csv_has_every_column_and_lists_as_json() -> None:
    out = io.StringIO()
    assert write_csv(ROWS, out) == 2
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert list(rows[0]) == ["symbol", "price", "providers_used", "flags"]
    assert orjson.loads(rows[0]["providers_used"]) == ["a", "b"]
    assert rows[1]["flags"] == '["stale"]' and rows[1]["providers_used"] == ""
