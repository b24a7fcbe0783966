"""Binary data frames (schemas/codec.py): records as columns and back (``columns_of``,
``fiml_stream.records_of``), the msgpack data message (``data_frame_msgpack``) and the one-parse
decode of many encoded records (``parse_many``)."""

from __future__ import annotations

from typing import Any

import orjson
import ormsgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fiml_stream import records_of
from gateway.channels import record_keys
from schemas.codec import columns_of, data_frame, data_frame_msgpack, encode, parse_many
from schemas.records import PriceUpdate
from tests.unit.schemas.strategies import price_updates

_KEYS = record_keys("fiml.prices")
assert _KEYS is not None
PRICE_KEYS: tuple[str, ...] = _KEYS

#: Every key of a binary data message (docs/WEBSOCKET.md, "Binary frames").
FRAME_KEYS = {
    "type",
    "stream_type",
    "subscription_id",
    "count",
    "columns",
    "timestamp",
    "timestamp_ms",
    "seq",
    "metadata",
    "resume_token",
}

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
)


def _not_a_price_key(key: str) -> bool:
    return key not in PRICE_KEYS


extra_keys: st.SearchStrategy[dict[str, Any]] = st.dictionaries(
    st.text(max_size=6).filter(_not_a_price_key), json_values, max_size=3
)


def as_dict(update: PriceUpdate) -> dict[str, Any]:
    """A record as a topic holds it and ``route`` parses it."""
    record: dict[str, Any] = orjson.loads(encode(update))
    return record


@st.composite
def altered(draw: st.DrawFn) -> dict[str, Any]:
    """A price record with some keys removed (``symbol`` kept: ``route`` requires it) and some
    keys added."""
    record = as_dict(draw(price_updates()))
    for key in draw(st.sets(st.sampled_from([k for k in PRICE_KEYS if k != "symbol"]))):
        del record[key]
    record.update(draw(extra_keys))
    return record


def filled(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``records`` with None for every key another record has and they lack."""
    union = dict.fromkeys(k for r in records for k in r)
    return [{k: r.get(k) for k in union} for r in records]


@settings(deadline=None, max_examples=150)
@given(st.lists(price_updates().map(as_dict), max_size=20))
def test_whole_records_go_to_columns_of_the_writers_keys_and_back(
    records: list[dict[str, Any]],
) -> None:
    columns = columns_of(records, PRICE_KEYS)
    assert tuple(columns) == PRICE_KEYS
    assert all(len(column) == len(records) for column in columns.values())
    assert records_of({"columns": columns}) == records


@settings(deadline=None, max_examples=150)
@given(st.lists(price_updates().map(as_dict), min_size=1, max_size=10), extra_keys)
def test_records_with_more_keys_than_known_give_the_union(
    records: list[dict[str, Any]], extra: dict[str, Any]
) -> None:
    records[-1].update(extra)
    columns = columns_of(records, PRICE_KEYS)
    assert list(columns) == [*PRICE_KEYS, *extra]
    assert all(len(column) == len(records) for column in columns.values())
    assert records_of({"columns": columns}) == filled(records)


@settings(deadline=None, max_examples=150)
@given(st.lists(altered() | price_updates().map(as_dict), max_size=12))
def test_records_with_missing_or_extra_keys_come_back_with_none_for_the_missing(
    records: list[dict[str, Any]],
) -> None:
    columns = columns_of(records, None)
    assert list(columns) == list(dict.fromkeys(k for r in records for k in r))
    assert all(len(column) == len(records) for column in columns.values())
    assert records_of({"columns": columns}) == filled(records)


@settings(deadline=None, max_examples=100)
@given(st.lists(altered(), max_size=12))
def test_known_keys_some_records_lack_fall_back_to_the_union(
    records: list[dict[str, Any]],
) -> None:
    # only records missing keys: fewer keys than known, never the fast path's KeyError
    records = [r for r in records if not set(r) - set(PRICE_KEYS)]
    columns = columns_of(records, PRICE_KEYS)
    assert all(len(column) == len(records) for column in columns.values())
    assert records_of({"columns": columns}) == filled(records)


def test_records_of_a_json_message_is_its_data() -> None:
    data = [{"symbol": "BTC/USDT", "price": 1.0}]
    assert records_of({"type": "data", "data": data}) is data


@settings(deadline=None, max_examples=100)
@given(
    updates=st.lists(price_updates(), max_size=15),
    seq=st.integers(min_value=1, max_value=2**53),
    now=st.integers(min_value=0, max_value=253_402_300_799_999),
    token=st.none() | st.text(min_size=1, max_size=40),
    sub_id=st.text(min_size=1, max_size=20),
)
def test_a_msgpack_frame_is_the_json_frame_with_columns(
    updates: list[PriceUpdate], seq: int, now: int, token: str | None, sub_id: str
) -> None:
    items = [encode(u) for u in updates]
    records = parse_many(items)
    frame = data_frame_msgpack(
        "price", sub_id, columns_of(records, PRICE_KEYS), len(items), now, seq, token
    )
    assert isinstance(frame, bytes)
    message = ormsgpack.unpackb(frame)
    assert set(message) == FRAME_KEYS
    assert message["type"] == "data" and message["count"] == len(updates)
    assert all(len(column) == message["count"] for column in message["columns"].values())
    as_json = orjson.loads(data_frame("price", sub_id, items, now, seq, token))
    assert records_of(message) == as_json["data"] == records
    del message["columns"], message["count"], as_json["data"]
    assert message == as_json  # every other key the same: seq, timestamps, token, metadata


def test_an_empty_msgpack_frame_has_count_zero() -> None:
    message = ormsgpack.unpackb(
        data_frame_msgpack("price", "s", columns_of([], PRICE_KEYS), 0, 1, 1)
    )
    assert message["count"] == 0 and records_of(message) == []
    assert set(message) == FRAME_KEYS and message["resume_token"] is None


@given(st.lists(json_values, max_size=20))
def test_parse_many_is_one_loads_each(values: list[Any]) -> None:
    items = [orjson.dumps(v) for v in values]
    assert parse_many(items) == [orjson.loads(i) for i in items]


@given(st.lists(price_updates(), max_size=10))
def test_parse_many_of_encoded_records(updates: list[PriceUpdate]) -> None:
    items = [encode(u) for u in updates]
    assert parse_many(items) == [orjson.loads(i) for i in items]


@pytest.mark.parametrize(
    "items",
    [
        [b"1,2"],
        [b'{"a":1}', b"1,2", b"3"],
        [b""],
        [b"1", b""],
        [b"{"],
        [b'{"a":1', b'"b":2}'],  # two halves of one object
        [b"nul"],
        [b"1 2"],
        [b"[1", b"2]"],
    ],
)
def test_parse_many_refuses_an_item_that_is_not_one_json_value(items: list[bytes]) -> None:
    with pytest.raises(orjson.JSONDecodeError):
        parse_many(items)
    with pytest.raises(orjson.JSONDecodeError):
        [orjson.loads(i) for i in items]


def test_parse_many_is_not_a_validator() -> None:
    """As documented: items whose splice is an array of as many values pass, so only records
    already checked (by ``route``) may be given to it."""
    assert parse_many([b'{"a":1', b'"b":2}', b"3,4"]) == [{"a": 1, "b": 2}, 3, 4]
