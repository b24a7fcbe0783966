"""The ccxt adapter's pure part on ccxt's own recorded exchange responses."""

from __future__ import annotations

import json
from typing import Any

import ccxt
import pytest

from agents.ingest.ccxt_adapter import (
    CcxtProvider,
    classify_ccxt_error,
    ticker_to_tick,
    trade_to_raw,
)
from agents.ingest.errors import PayloadError
from schemas.records import AssetType
from tests.conftest import SHARED_DATA

RESPONSES = SHARED_DATA / "ccxt-responses"
pytestmark = pytest.mark.skipif(not RESPONSES.exists(), reason=f"shared data missing: {RESPONSES}")

MARKETS = {
    "binance": {"id": "BTCUSDT", "symbol": "BTC/USDT", "base": "BTC", "quote": "USDT"},
    "kraken": {"id": "XBTUSDT", "symbol": "BTC/USDT", "base": "BTC", "quote": "USDT",
               "altname": "XBTUSDT", "wsId": "XBT/USDT"},
    "coinbase": {"id": "BTC-USDC", "symbol": "BTC/USDC", "base": "BTC", "quote": "USDC"},
}  # fmt: skip


def _entry(exchange: str, method: str) -> dict[str, Any]:
    data = json.loads((RESPONSES / f"{exchange}.marketdata.extract.json").read_text())
    entry: dict[str, Any] = data["methods"][method][0]
    return entry


def _client(exchange: str, module: Any, response: Any) -> Any:
    """A ccxt exchange whose HTTP layer answers ``response`` (ccxt's public ``fetch`` seam)."""
    client = getattr(module, exchange)()
    client.set_markets([{**MARKETS[exchange], "spot": True, "type": "spot"}])
    if module is ccxt:
        client.fetch = lambda url, method="GET", headers=None, body=None: response
    else:

        async def fetch(url: str, method: str = "GET", headers: Any = None, body: Any = None) -> Any:  # noqa: E501
            return response

        client.fetch = fetch
    return client


@pytest.mark.parametrize("exchange", ["binance", "kraken", "coinbase"])
def test_ticker_matches_ccxt_parsed_response(exchange: str) -> None:
    entry = _entry(exchange, "fetchTicker")
    parsed = _client(exchange, ccxt, entry["httpResponse"]).fetch_ticker(*entry["input"])
    expected = entry["parsedResponse"]
    for field in ("symbol", "last", "bid", "ask", "timestamp"):
        assert parsed[field] == expected[field], field
    symbol = expected["symbol"]
    tick = ticker_to_tick(
        parsed, provider=f"ccxt:{exchange}", symbol=symbol, seq=7, ingest_time_ms=99
    )
    assert tick.symbol == symbol and tick.asset_type is AssetType.CRYPTO
    assert (tick.price, tick.bid, tick.ask) == (expected["last"], expected["bid"], expected["ask"])
    assert tick.event_time_ms == (expected["timestamp"] or 99)  # kraken sends no time
    assert tick.volume == expected["baseVolume"] and tick.seq == 7


@pytest.mark.parametrize("exchange", ["binance", "kraken"])
def test_trades_match_ccxt_parsed_response(exchange: str) -> None:
    entry = _entry(exchange, "fetchTrades")
    (got,) = _client(exchange, ccxt, entry["httpResponse"]).fetch_trades(*entry["input"])
    (expected,) = entry["parsedResponse"]
    for field in ("id", "timestamp", "price", "amount", "side"):
        assert got[field] == expected[field], field
    trade = trade_to_raw(got, provider="ccxt:x", symbol="BTC/USDT", seq=0, ingest_time_ms=1)
    assert (trade.trade_id, trade.price, trade.amount, trade.side, trade.event_time_ms) == (
        expected["id"], expected["price"], expected["amount"], expected["side"],
        expected["timestamp"],
    )  # fmt: skip


async def test_rest_polling_provider_on_recorded_responses() -> None:
    import ccxt.async_support as ccxt_async

    ticker = _entry("binance", "fetchTicker")["httpResponse"]
    trades = _entry("binance", "fetchTrades")["httpResponse"]
    provider = CcxtProvider("binance", ["BTC/USDT"], mode="poll", clock=lambda: 5)
    provider.max_cycles = 2
    provider.config.interval = 0
    async with provider:
        assert not provider.streaming
        client = _client("binance", ccxt_async, None)
        await provider.exchange.close()

        async def fetch(url: str, method: str = "GET", headers: Any = None, body: Any = None) -> Any:  # noqa: E501
            return trades if "trades" in url.lower() else ticker

        client.fetch = fetch
        provider.exchange = client
        events = [event async for event in provider]
    kinds = [type(e).__name__ for e in events]
    # the same recent trade comes back on the second poll: it is emitted once
    assert kinds == ["RawTick", "RawTrade", "ProviderHealth", "RawTick"]
    assert events[2].state == "up"
    assert events[0].price == 73369.84 and events[1].trade_id == "2913537567"


def test_bad_payloads_raise_payload_error() -> None:
    with pytest.raises(PayloadError, match="no last"):
        ticker_to_tick({"symbol": "BTC/USDT"}, provider="p", symbol="BTC/USDT", seq=0,
                       ingest_time_ms=1)  # fmt: skip
    with pytest.raises(PayloadError):
        ticker_to_tick({"last": -1.0}, provider="p", symbol="BTC/USDT", seq=0, ingest_time_ms=1)
    with pytest.raises(PayloadError):
        trade_to_raw({"price": 1.0}, provider="p", symbol="BTC/USDT", seq=0, ingest_time_ms=1)


def test_error_classification() -> None:
    assert classify_ccxt_error(ccxt.NetworkError("down")).retryable
    assert classify_ccxt_error(ccxt.RateLimitExceeded("slow down")).retryable
    assert not classify_ccxt_error(ccxt.BadSymbol("nope")).retryable
    assert not classify_ccxt_error(ccxt.AuthenticationError("key")).retryable


def test_non_crypto_symbols_are_refused_up_front() -> None:
    with pytest.raises(ValueError, match="ccxt has no equity"):
        CcxtProvider("binance", ["AAPL"])
