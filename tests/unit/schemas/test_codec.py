"""Codec: round-trips for every record, one error type for bad bytes, the data-frame fast path."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from schemas.codec import RECORD_TYPES, data_frame, decode, decode_raw, encode, encode_many
from schemas.errors import DecodeError, SchemaError
from schemas.protocol import DataMessage, StreamType
from schemas.records import SCHEMA_VERSION, AssetType, PriceUpdate, RawTick, RawTrade
from schemas.times import MAX_EPOCH_MS
from schemas.topics import TOPICS
from tests.unit.schemas.strategies import RECORD_STRATEGIES, SERVER_STRATEGIES, derived

ALL = {**RECORD_STRATEGIES, **SERVER_STRATEGIES}


@pytest.mark.parametrize("name", sorted(ALL))
@settings(deadline=None, max_examples=150)
@given(data=st.data())
def test_round_trip(name: str, data: st.DataObject) -> None:
    model: BaseModel = data.draw(ALL[name])
    encoded = encode(model)
    assert isinstance(encoded, bytes)
    decoded = decode(type(model), encoded)
    assert decoded == model
    assert encode(decoded) == encoded  # stable bytes: a re-encode changes nothing


def test_floats_keep_every_digit() -> None:
    update = PriceUpdate(
        symbol="X", asset_type="crypto", price=0.1 + 0.2, confidence=1.0, band_low=5e-324,
        band_high=1.7976931348623157e308, providers_used=["a"], event_time_ms=0, source_ticks=0,
        provider="a", day_open=0.3,
    )  # fmt: skip
    body = orjson.loads(encode(update))
    assert body["price"] == 0.30000000000000004
    assert body["band_low"] == 5e-324 and body["band_high"] == 1.7976931348623157e308
    assert body["v"] == SCHEMA_VERSION == 2


TICK = (
    b'{"provider":"sim","symbol":"AAPL","provider_symbol":"AAPL","asset_type":"equity",'
    b'"price":190.5,"event_time_ms":1,"ingest_time_ms":2,"seq":3}'
)


def test_decode_accepts_bytes_str_and_memoryview() -> None:
    expected = decode(RawTick, TICK)
    assert decode(RawTick, TICK.decode()) == expected
    assert decode(RawTick, memoryview(TICK)) == expected
    assert decode(RawTick, bytearray(TICK)) == expected


@pytest.mark.parametrize(
    ("data", "field", "words"),
    [
        (b"", None, "JSON"),
        (b"{not json", None, "JSON"),
        (b"[1, 2]", None, "object"),
        (TICK.replace(b"190.5", b"NaN"), "price", "finite"),
        (TICK.replace(b"190.5", b"Infinity"), "price", "finite"),
        (TICK.replace(b"190.5", b"-1"), "price", "greater than 0"),
        (TICK.replace(b"190.5", b'"190.5"'), "price", "valid number"),
        (TICK.replace(b'"seq":3', b'"seq":3,"extra":1'), "extra", "not permitted"),
        (TICK.replace(b',"seq":3', b""), "seq", "required"),
        (TICK.replace(b'"equity"', b'"stock"'), "asset_type", "crypto"),
    ],
)
def test_decode_errors_say_what_and_where(data: bytes, field: str | None, words: str) -> None:
    with pytest.raises(DecodeError) as exc:
        decode(RawTick, data)
    assert isinstance(exc.value, SchemaError)
    assert exc.value.field == field
    assert words in exc.value.message


def test_decode_error_counts_further_problems() -> None:
    with pytest.raises(DecodeError) as exc:
        decode(RawTick, b"{}")
    assert exc.value.field == "provider"
    assert "more error(s)" in exc.value.message


def test_record_types_follow_the_topic_registry() -> None:
    assert RECORD_TYPES["fiml.prices"] is PriceUpdate
    assert RECORD_TYPES["fiml.sim.truth"] is RawTick
    assert "fiml.deadletter" not in RECORD_TYPES
    assert "fiml.raw" not in RECORD_TYPES  # two models: decode_raw tells them apart
    for topic, model in RECORD_TYPES.items():
        assert TOPICS[topic].value == model.__name__
    untyped = {TOPICS["fiml.deadletter"].value, TOPICS["fiml.raw"].value}
    assert {t for t, s in TOPICS.items() if s.value not in untyped} == set(RECORD_TYPES)


@given(st.one_of(RECORD_STRATEGIES["RawTick"], RECORD_STRATEGIES["RawTrade"]))
def test_decode_raw_tells_ticks_from_trades(record: RawTick | RawTrade) -> None:
    assert decode_raw(encode(record)) == record


def test_decode_raw_reads_a_tick_whose_value_is_the_word_trade_id() -> None:
    tick = RawTick(
        provider="p",
        symbol="BTC/USD",
        provider_symbol="trade_id",
        asset_type=AssetType.CRYPTO,
        price=1.0,
        event_time_ms=1,
        ingest_time_ms=1,
        seq=0,
    )
    assert b'"trade_id"' in encode(tick)
    assert decode_raw(encode(tick)) == tick


def test_decode_raw_names_the_trade_field_a_trade_lacks() -> None:
    trade = orjson.loads(
        encode(
            RawTrade(
                provider="p",
                symbol="BTC/USD",
                provider_symbol="BTCUSD",
                asset_type=AssetType.CRYPTO,
                trade_id="7",
                price=1.0,
                amount=2.0,
                event_time_ms=1,
                ingest_time_ms=1,
                seq=0,
            )
        )
    )
    del trade["amount"]
    with pytest.raises(DecodeError) as exc:
        decode_raw(orjson.dumps(trade))
    assert exc.value.field == "amount"


@settings(deadline=None, max_examples=100)
@given(
    items=st.lists(derived, max_size=5),
    stream_type=st.sampled_from(StreamType),
    subscription_id=st.text(min_size=1),
    timestamp=st.integers(0, MAX_EPOCH_MS),
    seq=st.integers(0, 2**63 - 1),
    token=st.none() | st.text(min_size=1),
)
def test_data_frame_matches_the_model(
    items: list[Any],
    stream_type: StreamType,
    subscription_id: str,
    timestamp: int,
    seq: int,
    token: str | None,
) -> None:
    frame = data_frame(stream_type, subscription_id, encode_many(items), timestamp, seq, token)
    model = DataMessage(
        stream_type=stream_type, subscription_id=subscription_id, data=items,
        timestamp_ms=timestamp, seq=seq, resume_token=token,
    )  # fmt: skip
    assert decode(DataMessage, frame) == model
    assert frame == encode(model)  # byte-identical: clients cannot tell the paths apart
