"""Subscription targets and their validation errors."""

from __future__ import annotations

import pytest

from gateway.channels import resolve
from gateway.settings import GatewaySettings
from schemas.errors import ProtocolError
from schemas.protocol import SubscribeRequest

LIVE = GatewaySettings().topics


def req(**kw: object) -> SubscribeRequest:
    return SubscribeRequest.model_validate({"stream_type": "price", "symbols": ["AAPL"], **kw})


def test_stream_types_map_to_topics_and_channels() -> None:
    assert resolve(req(), LIVE).channels == (("fiml.prices", "AAPL", ""),)
    spec = resolve(req(stream_type="ohlcv", symbols=["btc_usdt"], params={"interval": "5m"}), LIVE)
    assert spec.channels == (("fiml.ohlcv", "BTC/USDT", "5m"),)
    assert resolve(req(stream_type="trades"), LIVE).batched
    assert resolve(req(params={"source": "raw"}), LIVE).topic == "fiml.raw.ticks"
    multi = resolve(req(stream_type="multi_asset", symbols=["AAPL", "BTC/USDT"]), LIVE)
    assert multi.topic == "fiml.prices" and multi.symbols == ("AAPL", "BTC/USDT")


@pytest.mark.parametrize(
    ("fields", "code", "field"),
    [
        ({"symbols": ["AAPL", "??"]}, "UNKNOWN_SYMBOL", "symbols.1"),
        ({"asset_type": "crypto"}, "UNKNOWN_SYMBOL", "symbols.0"),
        ({"stream_type": "ohlcv", "params": {"interval": "2m"}}, "SUBSCRIPTION_ERROR",
         "params.interval"),
        ({"params": {"source": "nowhere"}}, "SUBSCRIPTION_ERROR", "params.source"),
        ({"stream_type": "trades", "params": {"source": "raw"}}, "SUBSCRIPTION_ERROR",
         "params.source"),
    ],
)
def test_bad_targets_name_the_problem(fields: dict[str, object], code: str, field: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        resolve(req(**fields), LIVE)
    assert (caught.value.code, caught.value.field) == (code, field)
