"""Subscription targets and their validation errors."""

from __future__ import annotations

import orjson
import pytest

from gateway.channels import parse_slice, resolve, route, route_parsed
from gateway.settings import GatewaySettings
from schemas.codec import encode
from schemas.errors import DecodeError, ProtocolError
from schemas.protocol import SubscribeRequest
from schemas.records import AssetType, Interval, OHLCVUpdate, PriceUpdate

LIVE = GatewaySettings().topics


def req(**kw: object) -> SubscribeRequest:
    return SubscribeRequest.model_validate({"stream_type": "price", "symbols": ["AAPL"], **kw})


def test_stream_types_map_to_topics_and_channels() -> None:
    assert resolve(req(), LIVE).channels == (("fiml.prices", "AAPL", ""),)
    spec = resolve(req(stream_type="ohlcv", symbols=["btc_usdt"], params={"interval": "5m"}), LIVE)
    assert spec.channels == (("fiml.ohlcv", "BTC/USDT", "5m"),)
    assert resolve(req(stream_type="trades"), LIVE).batched
    assert resolve(req(params={"source": "raw"}), LIVE).topic == "fiml.raw"
    multi = resolve(req(stream_type="multi_asset", symbols=["AAPL", "BTC/USDT"]), LIVE)
    assert multi.topic == "fiml.prices" and multi.symbols == ("AAPL", "BTC/USDT")


@pytest.mark.parametrize(
    ("fields", "code", "field"),
    [
        ({"symbols": ["AAPL", "??"]}, "UNKNOWN_SYMBOL", "symbols.1"),
        ({"asset_type": "crypto"}, "UNKNOWN_SYMBOL", "symbols.0"),
        (
            {"stream_type": "ohlcv", "params": {"interval": "2m"}},
            "SUBSCRIPTION_ERROR",
            "params.interval",
        ),
        ({"params": {"source": "nowhere"}}, "SUBSCRIPTION_ERROR", "params.source"),
        (
            {"stream_type": "trades", "params": {"source": "raw"}},
            "SUBSCRIPTION_ERROR",
            "params.source",
        ),
    ],
)
def test_bad_targets_name_the_problem(fields: dict[str, object], code: str, field: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        resolve(req(**fields), LIVE)
    assert (caught.value.code, caught.value.field) == (code, field)


# --- routing records read by the hub -------------------------------------------------------


#: One encoded price record with every key of its model.
PRICE = encode(
    PriceUpdate(
        symbol="BTC/USDT",
        asset_type=AssetType.CRYPTO,
        price=100.0,
        confidence=0.9,
        band_low=99.0,
        band_high=101.0,
        providers_used=["a"],
        event_time_ms=1,
        source_ticks=1,
        provider="a",
        day_open=100.0,
    )
)


def test_route_gives_the_channel_a_subscription_lists() -> None:
    price = PRICE
    (channel, record) = route("fiml.prices", price)
    spec = resolve(req(stream_type="price", symbols=["BTC/USDT"]), LIVE)
    assert channel in spec.channels and record["event_time_ms"] == 1
    candle = encode(
        OHLCVUpdate(
            symbol="BTC/USDT",
            interval=Interval.M5,
            window_start_ms=0,
            window_end_ms=300_000,
            open=1.0,
            high=2.0,
            low=0.5,
            close=1.5,
            volume=0.0,
            trade_count=0,
            rev=0,
            is_final=False,
            event_time_ms=5,
        )
    )
    spec = resolve(req(stream_type="ohlcv", symbols=["BTC/USDT"], params={"interval": "5m"}), LIVE)
    assert route("fiml.ohlcv", candle)[0] in spec.channels


@pytest.mark.parametrize(
    ("topic", "payload", "field"),
    [
        ("fiml.prices", b"not json", None),
        ("fiml.prices", b"[1, 2]", None),
        ("fiml.prices", b'{"price": 1.0}', "symbol"),
        ("fiml.prices", b'{"symbol": ""}', "symbol"),
        ("fiml.ohlcv", b'{"symbol": "BTC/USDT", "interval": "7m"}', "interval"),
        ("fiml.ohlcv", b'{"symbol": "BTC/USDT"}', "interval"),
    ],
)
def test_route_rejects_what_cannot_be_routed(topic: str, payload: bytes, field: str | None) -> None:
    with pytest.raises(DecodeError) as info:
        route(topic, payload)
    assert info.value.field == field


def test_a_record_missing_a_key_of_its_model_is_not_routed() -> None:
    """A client reads every documented key; a record without one (a v1 record without the
    seed's keys, a stray producer's object) must not reach it."""
    full = orjson.loads(PRICE)
    assert route("fiml.prices", orjson.dumps(full))[0] == ("fiml.prices", "BTC/USDT", "")
    for key in ("change_percent", "timestamp", "provider", "price"):
        partial = {k: v for k, v in full.items() if k != key}
        with pytest.raises(DecodeError) as exc:
            route("fiml.prices", orjson.dumps(partial))
        assert exc.value.field == key


def test_a_malformed_value_never_shifts_its_neighbours_onto_other_records() -> None:
    """Values parsed one by one: three malformed ones are three refusals, not the two records
    their concatenation would parse to."""
    values: list[bytes | None] = [b'{"x":[1', b"2]}", b'{"a":1},{"b":2}', None]
    assert parse_slice(values) == [None, None, None, None]
    for value in parse_slice(values):
        with pytest.raises(DecodeError):
            route_parsed("fiml.prices", value)
