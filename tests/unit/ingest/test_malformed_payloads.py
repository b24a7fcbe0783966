"""A provider that returns a malformed payload stays up: every adapter's conversion, fed a
recorded payload with its fields replaced by anything (a string for a number, a list for an
object, a huge number, nothing), gives a valid record or a ``PayloadError`` (which the adapter
dead-letters), never another exception (which would take the provider down)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypedDict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.ingest.alphavantage import exchange_rate_to_tick, global_quote_to_tick
from agents.ingest.ccxt_adapter import ticker_to_tick, trade_to_raw
from agents.ingest.errors import PayloadError
from agents.ingest.fmp import quote_to_tick
from agents.ingest.yfinance_adapter import info_to_tick
from schemas.records import RawTick, RawTrade
from tests.conftest import TEST_DATA

FIXTURES = Path(__file__).parent / "fixtures"
garbage = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.text(max_size=12),
    st.floats(),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.sampled_from(["NaN", "inf", "-1", "1e999", "", "2026-13-45 25:61:00", "0"]),
)


def ccxt(method: str) -> Any:
    data = json.loads(
        (TEST_DATA / "ccxt-responses" / "binance.marketdata.extract.json").read_text()
    )
    parsed = data["methods"][method][0]["parsedResponse"]
    return parsed[0] if isinstance(parsed, list) else parsed


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


class Stamps(TypedDict):
    """The keyword arguments every converter takes besides the payload and the symbol."""

    seq: int
    ingest_time_ms: int


KW: Stamps = {"seq": 1, "ingest_time_ms": 1_796_400_000_000}
CASES: dict[str, tuple[Callable[[Any], Any], Any, tuple[str, ...]]] = {
    "ccxt ticker": (
        lambda p: ticker_to_tick(p, provider="ccxt_binance", symbol="BTC/USDT", **KW),
        ccxt("fetchTicker"),
        (),
    ),
    "ccxt trade": (
        lambda p: trade_to_raw(p, provider="ccxt_binance", symbol="BTC/USDT", **KW),
        ccxt("fetchTrades"),
        (),
    ),
    "yfinance": (lambda p: info_to_tick(p, symbol="AAPL", **KW), fixture("yfinance_info.json"), ()),
    "alpha vantage quote": (
        lambda p: global_quote_to_tick(p, symbol="IBM", **KW),
        fixture("alphavantage_global_quote.json"),
        ("Global Quote",),
    ),
    "alpha vantage fx": (
        lambda p: exchange_rate_to_tick(p, symbol="EUR/USD", **KW),
        fixture("alphavantage_exchange_rate.json"),
        ("Realtime Currency Exchange Rate",),
    ),
    "fmp": (lambda p: quote_to_tick(p, symbol="AAPL", **KW), fixture("fmp_quote.json"), ("0",)),
}


def mutate(payload: Any, path: tuple[str, ...], key: str | None, value: Any) -> Any:
    """``payload`` with ``key`` of the object at ``path`` set to ``value`` (None: dropped)."""
    payload = json.loads(json.dumps(payload))
    target = payload
    for step in path:
        target = target[int(step)] if isinstance(target, list) else target[step]
    if key is not None and key in target:
        if value is ...:
            del target[key]
        else:
            target[key] = value
    return payload


@pytest.mark.parametrize("case", sorted(CASES))
@settings(deadline=None, max_examples=150)
@given(data=st.data())
def test_a_malformed_payload_is_a_payload_error_never_a_crash(
    case: str, data: st.DataObject
) -> None:
    convert, payload, path = CASES[case]
    inner = payload
    for step in path:
        inner = inner[int(step)] if isinstance(inner, list) else inner[step]
    keys = sorted(inner)
    mutated = payload
    for _ in range(data.draw(st.integers(1, 4))):
        key = data.draw(st.sampled_from(keys))
        mutated = mutate(mutated, path, key, data.draw(garbage | st.just(...)))
    try:
        record = convert(mutated)
    except PayloadError:
        return  # dead-lettered by the adapter; the provider goes on
    assert isinstance(record, RawTick | RawTrade)


def test_the_recorded_payloads_convert() -> None:
    for case, (convert, payload, _path) in CASES.items():
        assert isinstance(convert(payload), RawTick | RawTrade), case
