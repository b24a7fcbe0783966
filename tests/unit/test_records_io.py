"""``fiml replay``'s time arguments (the output formats: tests/unit/test_export_formats.py)."""

from __future__ import annotations

import pytest

from infra.records_io import parse_time

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
