"""WebSocket protocol: the seed message, every limit and the error code it maps to."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from schemas.errors import ProtocolError, SchemaError
from schemas.protocol import (
    ErrorCode,
    ErrorMessage,
    StreamType,
    SubscribeRequest,
    UnsubscribeRequest,
    parse_client_message,
)

SEED = (
    '{"type": "subscribe", "stream_type": "price", "symbols": ["AAPL", "TSLA", "NVDA"], '
    '"asset_type": "equity", "market": "US", "interval_ms": 1000, "data_type": "price"}'
)


def sub(**overrides: Any) -> bytes:
    message: dict[str, Any] = {"type": "subscribe", "stream_type": "price", "symbols": ["AAPL"]}
    message.update(overrides)
    return orjson.dumps({k: v for k, v in message.items() if v is not ...})


def rejected(raw: bytes | str) -> ProtocolError:
    with pytest.raises(ProtocolError) as exc:
        parse_client_message(raw)
    assert isinstance(exc.value, SchemaError)
    return exc.value


def test_seed_message_is_accepted() -> None:
    for raw in (SEED, SEED.encode()):
        message = parse_client_message(raw)
        assert isinstance(message, SubscribeRequest)
        assert message.stream_type is StreamType.PRICE
        assert message.symbols == ["AAPL", "TSLA", "NVDA"]
        assert (message.asset_type, message.market, message.data_type) == ("equity", "US", "price")
        assert message.interval_ms == 1000
        assert (message.snapshot, message.mode, message.params) == (True, "conflated", {})
        assert message.replay_from is None and message.resume_from is None


def test_defaults_and_unknown_keys_ignored() -> None:
    message = parse_client_message(sub(client_version="1.2", foo={"bar": 1}))
    assert isinstance(message, SubscribeRequest)
    assert message.interval_ms == 1000 and message.asset_type is None
    assert not hasattr(message, "client_version")


@pytest.mark.parametrize("stream_type", list(StreamType))
def test_every_stream_type(stream_type: StreamType) -> None:
    message = parse_client_message(sub(stream_type=stream_type.value))
    assert isinstance(message, SubscribeRequest) and message.stream_type is stream_type


def test_unsubscribe() -> None:
    message = parse_client_message('{"type": "unsubscribe", "subscription_id": "abc"}')
    assert message == UnsubscribeRequest(subscription_id="abc")
    error = rejected('{"type": "unsubscribe"}')
    assert (error.code, error.field) == (ErrorCode.SUBSCRIPTION_ERROR, "subscription_id")


@pytest.mark.parametrize("raw", ["", "{", "subscribe", b"\xff\xfe", '{"type": "subscribe",}'])
def test_invalid_json(raw: str | bytes) -> None:
    error = rejected(raw)
    assert error.code is ErrorCode.INVALID_JSON and error.field is None
    assert "invalid JSON" in error.message


@pytest.mark.parametrize(
    "raw", ['{"stream_type": "price"}', '{"type": "subscrib"}', '{"type": 1}', "[1]", '"x"', "3"]
)
def test_invalid_message_type(raw: str) -> None:
    error = rejected(raw)
    assert (error.code, error.field) == (ErrorCode.INVALID_MESSAGE_TYPE, "type")


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"symbols": []}, "symbols"),
        ({"symbols": [f"S{i}" for i in range(51)]}, "symbols"),
        ({"symbols": ["AAPL", ""]}, "symbols"),
        ({"symbols": ["AAPL", "  "]}, "symbols"),
        ({"symbols": "AAPL"}, "symbols"),
        ({"symbols": [1]}, "symbols.0"),
        ({"symbols": ...}, "symbols"),
        ({"stream_type": ...}, "stream_type"),
        ({"stream_type": "candles"}, "stream_type"),
        ({"interval_ms": 99}, "interval_ms"),
        ({"interval_ms": 60001}, "interval_ms"),
        ({"interval_ms": "1000"}, "interval_ms"),
        ({"interval_ms": 1000.5}, "interval_ms"),
        ({"params": []}, "params"),
        ({"snapshot": "yes"}, "snapshot"),
        ({"mode": "fast"}, "mode"),
        ({"replay_from": "yesterday"}, "replay_from"),
        ({"replay_from": "2024-01-01T00:00:00"}, "replay_from"),  # no offset: not guessed
        ({"replay_from": -5}, "replay_from"),
        ({"replay_to": 5}, "replay_to"),
        ({"replay_from": 10, "replay_to": 10}, "replay_to"),
        ({"replay_speed": 0}, "replay_speed"),
        ({"resume_from": 4}, "resume_from"),
        ({"subscription_id": "a", "resume_from": 4}, "resume_token"),
        ({"subscription_id": "a", "resume_from": 2**60, "resume_token": "t"}, "resume_from"),
        ({"subscription_id": ""}, "subscription_id"),
    ],
)
def test_subscription_errors_name_the_field(overrides: dict[str, Any], field: str) -> None:
    error = rejected(sub(**overrides))
    assert error.code is ErrorCode.SUBSCRIPTION_ERROR
    assert error.field == field
    assert error.message and "Value error" not in error.message


def test_symbol_limits_are_inclusive() -> None:
    fifty = [f"S{i}" for i in range(50)]
    message = parse_client_message(sub(symbols=fifty, interval_ms=100))
    assert isinstance(message, SubscribeRequest)
    assert message.symbols == fifty and message.interval_ms == 100
    assert parse_client_message(sub(interval_ms=60000)).interval_ms == 60000  # type: ignore[union-attr]


def test_symbols_are_trimmed_and_deduplicated_in_order() -> None:
    message = parse_client_message(sub(symbols=["TSLA", " AAPL ", "TSLA", "AAPL"]))
    assert message.symbols == ["TSLA", "AAPL"]  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("value", "ms"),
    [
        (1_704_067_200_123, 1_704_067_200_123),
        ("2024-01-01T00:00:00Z", 1_704_067_200_000),
        ("2024-01-01T00:00:00.123Z", 1_704_067_200_123),
        ("2024-01-01T01:00:00.123999+01:00", 1_704_067_200_123),  # sub-ms floored
    ],
)
def test_replay_from_is_normalised_to_epoch_ms(value: object, ms: int) -> None:
    message = parse_client_message(sub(replay_from=value, replay_to=ms + 1, replay_speed=2.5))
    assert isinstance(message, SubscribeRequest)
    assert (message.replay_from, message.replay_to, message.replay_speed) == (ms, ms + 1, 2.5)


def test_resume_and_realtime() -> None:
    message = parse_client_message(
        sub(
            subscription_id="mine",
            resume_from=41,
            resume_token="t",
            mode="realtime",
            snapshot=False,
        )
    )
    assert isinstance(message, SubscribeRequest)
    assert (message.subscription_id, message.resume_from) == ("mine", 41)
    assert (message.mode, message.snapshot) == ("realtime", False)


def test_error_message_from_protocol_error() -> None:
    error = rejected(sub(interval_ms=99))
    message = ErrorMessage.from_error(error, timestamp_ms=5, subscription_id="s1")
    body = orjson.loads(message.model_dump_json())
    assert body["type"] == "error" and body["error_code"] == "SUBSCRIPTION_ERROR"
    assert body["field"] == "interval_ms" and body["subscription_id"] == "s1"
    assert "100" in body["message"]


def test_unsubscribe_in_the_seed_form() -> None:
    message = parse_client_message(
        '{"type": "unsubscribe", "stream_type": "price", "symbols": ["AAPL", "GOOGL"]}'
    )
    assert message == UnsubscribeRequest(stream_type=StreamType.PRICE, symbols=["AAPL", "GOOGL"])
    assert message.subscription_id is None
    error = rejected('{"type": "unsubscribe", "symbols": ["AAPL"]}')
    assert (error.code, error.field) == (ErrorCode.SUBSCRIPTION_ERROR, "subscription_id")


def test_data_message_admits_raw_ticks_and_trades() -> None:
    from schemas.protocol import DataMessage
    from schemas.records import AssetType, RawTick, RawTrade

    tick = RawTick(
        provider="sim-a",
        symbol="BTC/USDT",
        provider_symbol="BTCUSDT",
        asset_type=AssetType.CRYPTO,
        price=1.5,
        event_time_ms=1,
        ingest_time_ms=2,
        seq=3,
    )
    trade = RawTrade(
        provider="sim-a",
        symbol="BTC/USDT",
        provider_symbol="BTCUSDT",
        asset_type=AssetType.CRYPTO,
        trade_id="t1",
        price=1.5,
        amount=2.0,
        event_time_ms=1,
        ingest_time_ms=2,
        seq=4,
    )
    raw = DataMessage(
        stream_type=StreamType.PRICE, subscription_id="s", data=[tick, trade], timestamp_ms=5, seq=1
    ).model_dump_json()
    assert DataMessage.model_validate_json(raw).data == [tick, trade]


@pytest.mark.parametrize(
    "value", ["253402300800000", str(2**63), str(2**64), '"10000-01-01T00:00:00Z"']
)
def test_times_past_the_year_9999_are_refused(value: str) -> None:
    error = rejected(
        '{"type": "subscribe", "stream_type": "price", "symbols": ["AAPL"], '
        f'"replay_from": 1, "replay_to": {value}}}'
    )
    assert (error.code, error.field) == (ErrorCode.SUBSCRIPTION_ERROR, "replay_to")


def test_server_timestamps_are_iso_with_a_z_and_epoch_ms_beside() -> None:
    from datetime import datetime

    from schemas.protocol import Heartbeat

    beat = orjson.loads(
        Heartbeat(timestamp_ms=1_796_412_018_450, active_subscriptions=2).model_dump_json()
    )
    assert beat["timestamp"] == "2026-12-04T19:20:18.450Z"
    parsed = datetime.fromisoformat(beat["timestamp"].replace("Z", "+00:00"))
    assert round(parsed.timestamp() * 1000) == beat["timestamp_ms"]
    with pytest.raises(ValueError, match="timestamp must be timestamp_ms"):
        Heartbeat(
            timestamp="2026-12-04T19:20:18.451Z",
            timestamp_ms=1_796_412_018_450,
            active_subscriptions=2,
        )
