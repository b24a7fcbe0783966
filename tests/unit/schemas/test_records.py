"""Record validation: the limits every producer relies on."""

from __future__ import annotations

import math
from typing import Any

import pytest
from pydantic import ValidationError

from schemas.records import (
    SCHEMA_VERSION,
    AssetType,
    Interval,
    OHLCVUpdate,
    PriceUpdate,
    RawTick,
    RawTrade,
)


def tick(**overrides: Any) -> dict[str, Any]:
    fields: dict[str, Any] = dict(
        provider="binance",
        symbol="BTC/USDT",
        provider_symbol="BTCUSDT",
        asset_type="crypto",
        price=64123.45,
        bid=64123.4,
        ask=64123.5,
        event_time_ms=1_732_600_000_123,
        ingest_time_ms=1_732_600_000_150,
        seq=1,
    )
    fields.update(overrides)
    return fields


def error_fields(exc: pytest.ExceptionInfo[ValidationError]) -> list[str]:
    return [".".join(map(str, e["loc"])) for e in exc.value.errors()]


def test_valid_tick_defaults() -> None:
    record = RawTick(**tick())
    assert record.v == SCHEMA_VERSION == 2
    assert record.asset_type is AssetType.CRYPTO
    assert record.market is None and record.volume is None


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, -1.0, 0.0, 0])
@pytest.mark.parametrize("field", ["price", "bid", "ask"])
def test_prices_must_be_finite_and_positive(field: str, bad: float) -> None:
    with pytest.raises(ValidationError) as exc:
        RawTick(**tick(**{field: bad}))
    assert error_fields(exc) == [field]


@pytest.mark.parametrize("bad", [math.nan, math.inf, -0.5])
def test_sizes_must_be_finite_and_non_negative(bad: float) -> None:
    with pytest.raises(ValidationError) as exc:
        RawTick(**tick(bid_size=bad))
    assert error_fields(exc) == ["bid_size"]
    assert RawTick(**tick(bid_size=0.0)).bid_size == 0.0


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("price", "64123.45"),  # numeric strings are not prices
        ("event_time_ms", 1.5),
        ("event_time_ms", 1.0),  # times are ints, not floats
        ("event_time_ms", "1732600000123"),
        ("event_time_ms", -1),
        ("seq", True),
        ("asset_type", "stock"),
        ("symbol", ""),
    ],
)
def test_wrong_types_are_rejected(field: str, value: object) -> None:
    with pytest.raises(ValidationError) as exc:
        RawTick(**tick(**{field: value}))
    assert error_fields(exc) == [field]


def test_missing_and_unknown_fields() -> None:
    fields = tick()
    del fields["ingest_time_ms"]
    with pytest.raises(ValidationError) as exc:
        RawTick(**fields)
    assert error_fields(exc) == ["ingest_time_ms"]
    with pytest.raises(ValidationError) as exc:
        RawTick(**tick(pirce=1.0))
    assert error_fields(exc) == ["pirce"]


def test_records_are_frozen() -> None:
    record = RawTick(**tick())
    with pytest.raises(ValidationError):
        record.price = 1.0  # type: ignore[misc]


def test_prices_are_not_rounded() -> None:
    price = 0.1 + 0.2  # 0.30000000000000004
    assert RawTick(**tick(price=price)).price == price


def test_trade_side() -> None:
    trade = dict(tick(), trade_id="t1", amount=0.5, side="sell")
    for key in ("bid", "ask"):
        del trade[key]
    assert RawTrade(**trade).side == "sell"
    with pytest.raises(ValidationError):
        RawTrade(**dict(trade, side="short"))


def price_update(**overrides: Any) -> dict[str, Any]:
    fields: dict[str, Any] = dict(
        symbol="AAPL",
        asset_type="equity",
        price=190.0,
        confidence=0.9,
        band_low=189.5,
        band_high=190.5,
        providers_used=["yahoo_finance", "fmp"],
        event_time_ms=1,
        source_ticks=2,
        provider="fmp",
        day_open=188.0,
    )
    fields.update(overrides)
    return fields


@pytest.mark.parametrize("confidence", [-0.01, 1.01, math.nan])
def test_confidence_in_unit_interval(confidence: float) -> None:
    with pytest.raises(ValidationError) as exc:
        PriceUpdate(**price_update(confidence=confidence))
    assert error_fields(exc) == ["confidence"]


def test_band_must_contain_price() -> None:
    assert PriceUpdate(**price_update(band_low=190.0, band_high=190.0)).flags == []
    with pytest.raises(ValidationError, match="band_low <= price <= band_high"):
        PriceUpdate(**price_update(band_low=190.1))


def test_interval_lengths_and_alignment() -> None:
    assert [i.ms for i in Interval] == [1_000, 60_000, 300_000, 900_000, 3_600_000, 86_400_000]
    assert Interval("5m") is Interval.M5
    assert Interval.M1.window_start(1_732_600_059_999) == 1_732_600_020_000
    assert Interval.D1.window_start(86_400_000 * 3 + 5) == 86_400_000 * 3


def candle(**overrides: Any) -> dict[str, Any]:
    fields: dict[str, Any] = dict(
        symbol="BTC/USDT",
        interval="1m",
        window_start_ms=60_000,
        window_end_ms=120_000,
        open=10.0,
        high=12.0,
        low=9.0,
        close=11.0,
        volume=3.0,
        trade_count=4,
        rev=0,
        is_final=False,
        event_time_ms=61_000,
    )
    fields.update(overrides)
    return fields


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"window_start_ms": 60_001, "window_end_ms": 120_001}, "not aligned"),
        ({"window_end_ms": 180_000}, "window_end_ms"),
        ({"high": 10.5}, "low <= open, close <= high"),
        ({"low": 10.5}, "low <= open, close <= high"),
    ],
)
def test_candle_invariants(overrides: dict[str, Any], reason: str) -> None:
    assert OHLCVUpdate(**candle()).interval is Interval.M1
    with pytest.raises(ValidationError, match=reason):
        OHLCVUpdate(**candle(**overrides))


def test_candle_is_final_is_a_real_bool() -> None:
    with pytest.raises(ValidationError) as exc:
        OHLCVUpdate(**candle(is_final="yes"))
    assert error_fields(exc) == ["is_final", "is_closed"]  # is_closed copies it


def test_the_seed_keys_are_derived_and_a_wrong_copy_is_refused() -> None:
    price = PriceUpdate(**price_update(event_time_ms=1_796_412_018_450))
    assert (price.timestamp, price.change) == ("2026-12-04T19:20:18.450Z", 2.0)
    assert price.change_percent == 2.0 / 188.0 * 100
    for key, wrong in (
        ("change", 2.5),
        ("change_percent", 1.0),
        ("timestamp", "x"),
        ("timestamp", "2026-12-04T19:20:18.451Z"),
    ):
        with pytest.raises(ValidationError, match=key):
            PriceUpdate(**price_update(event_time_ms=1_796_412_018_450, **{key: wrong}))
    with pytest.raises(ValidationError, match="provider must be one of providers_used"):
        PriceUpdate(**price_update(provider="nobody"))
    candle_ = OHLCVUpdate(**candle(is_final=True))
    assert candle_.is_closed is True
    with pytest.raises(ValidationError, match="is_closed"):
        OHLCVUpdate(**candle(is_final=True, is_closed=False))
