"""ISO 8601 times on the wire: the cached formatter equals datetime's, both ways."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.times import MAX_EPOCH_MS, iso_ms, parse_iso_ms

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@given(st.integers(0, MAX_EPOCH_MS))
def test_iso_ms_is_datetimes_iso_form_and_parses_back(ms: int) -> None:
    text = iso_ms(ms)
    expected = (EPOCH + timedelta(milliseconds=ms)).isoformat(timespec="milliseconds")
    assert text == expected.replace("+00:00", "Z")
    # the seed's clients parse it like this
    assert datetime.fromisoformat(text.replace("Z", "+00:00")) == EPOCH + timedelta(milliseconds=ms)
    assert parse_iso_ms(text) == ms


def test_the_bounds() -> None:
    assert iso_ms(0) == "1970-01-01T00:00:00.000Z"
    assert iso_ms(MAX_EPOCH_MS) == "9999-12-31T23:59:59.999Z"
    for bad in (-1, MAX_EPOCH_MS + 1):
        with pytest.raises(ValueError, match="outside"):
            iso_ms(bad)


def test_parse_refuses_a_time_without_an_offset() -> None:
    assert parse_iso_ms("2026-12-04T03:09:22.700+01:00") == parse_iso_ms("2026-12-04T02:09:22.700Z")
    with pytest.raises(ValueError, match="UTC offset"):
        parse_iso_ms("2026-12-04T03:09:22")
    with pytest.raises(ValueError, match="ISO-8601"):
        parse_iso_ms("yesterday")
