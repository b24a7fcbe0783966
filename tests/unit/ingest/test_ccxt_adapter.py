"""The ccxt adapter's pure part on ccxt's own recorded exchange responses."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import ccxt
import pytest

from agents.ingest.base import Event, ProviderState
from agents.ingest.ccxt_adapter import (
    CcxtProvider,
    classify_ccxt_error,
    ticker_to_tick,
    trade_to_raw,
)
from agents.ingest.errors import PayloadError
from agents.ingest.polling import PollingConfig
from agents.ingest.resilience import Backoff
from schemas.records import AssetType, ProviderHealth, RawTick, RawTrade
from tests.conftest import TEST_DATA

RESPONSES = TEST_DATA / "ccxt-responses"

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

        async def fetch(
            url: str, method: str = "GET", headers: Any = None, body: Any = None
        ) -> Any:
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
        parsed, provider=f"ccxt_{exchange}", symbol=symbol, seq=7, ingest_time_ms=99
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

        async def fetch(
            url: str, method: str = "GET", headers: Any = None, body: Any = None
        ) -> Any:
            return trades if "trades" in url.lower() else ticker

        client.fetch = fetch
        provider.exchange = client
        events = [event async for event in provider]
    kinds = [type(e).__name__ for e in events]
    # the same recent trade comes back on the second poll: it is emitted once
    assert kinds == ["RawTick", "RawTrade", "ProviderHealth", "RawTick"]
    tick, trade, health = events[0], events[1], events[2]  # their kinds: asserted above
    assert isinstance(health, ProviderHealth) and health.state == "up"
    assert isinstance(tick, RawTick) and isinstance(trade, RawTrade)
    assert tick.price == 73369.84 and trade.trade_id == "2913537567"


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


class FakeProExchange:
    """A ccxt pro exchange that answers ``watch_ticker`` / ``watch_trades`` from recordings.

    Each watch call returns the next recorded answer for its method and symbol (an exception
    in the recording is raised instead); when the recording runs out the call waits forever,
    as a quiet WebSocket does.
    """

    has = {"watchTicker": True, "watchTrades": True}

    def __init__(self, answers: dict[tuple[str, str], list[Any]]) -> None:
        self.answers = answers
        self.calls: list[tuple[str, str]] = []
        self.closed = False

    async def _next(self, method: str, market: str) -> Any:
        self.calls.append((method, market))
        queue = self.answers.get((method, market), [])
        if not queue:
            await asyncio.Event().wait()
        answer = queue.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    async def watch_ticker(self, market: str) -> Any:
        return await self._next("watch_ticker", market)

    async def watch_trades(self, market: str) -> Any:
        return await self._next("watch_trades", market)

    async def close(self) -> None:
        self.closed = True


async def _no_sleep(_: float) -> None:
    await asyncio.sleep(0)


async def test_streaming_path_on_a_fake_exchange() -> None:
    ticker = _entry("binance", "fetchTicker")["parsedResponse"]
    trades = _entry("binance", "fetchTrades")["parsedResponse"]
    second = {**ticker, "last": ticker["last"] + 1, "timestamp": ticker["timestamp"] + 1_000}
    fake = FakeProExchange({
        ("watch_ticker", "BTC/USDT"): [ticker, second],
        # the trades feed fails once (network), then delivers: degraded, then up again
        ("watch_trades", "BTC/USDT"): [ccxt.NetworkError("socket closed"), trades],
    })  # fmt: skip
    config = PollingConfig(backoff=Backoff(base=0), sleep=_no_sleep)
    provider = CcxtProvider("binance", ["BTC/USDT"], mode="stream", config=config, clock=lambda: 5)
    async with provider:
        assert provider.streaming
        await provider.exchange.close()  # the real ccxt.pro client never touched the network
        provider.exchange = fake
        events: list[Event] = []
        async with contextlib.aclosing(provider.events()) as stream:
            async for event in stream:
                events.append(event)
                ticks = [e for e in events if isinstance(e, RawTick)]
                done = [e for e in events if isinstance(e, RawTrade)]
                if len(ticks) == 2 and done and provider.state is ProviderState.UP:
                    break
    assert fake.closed and provider.state is ProviderState.STOPPED
    ticks = [e for e in events if isinstance(e, RawTick)]
    assert [t.price for t in ticks] == [ticker["last"], ticker["last"] + 1]
    assert [t.event_time_ms for t in ticks] == [ticker["timestamp"], ticker["timestamp"] + 1_000]
    assert all(t.provider == "ccxt_binance" and t.symbol == "BTC/USDT" for t in ticks)
    (trade,) = [e for e in events if isinstance(e, RawTrade)]
    assert (trade.trade_id, trade.price, trade.side) == (
        trades[0]["id"], trades[0]["price"], trades[0]["side"],
    )  # fmt: skip
    seqs = [e.seq for e in events if isinstance(e, RawTick | RawTrade)]
    assert sorted(seqs) == list(range(len(seqs)))
    states = [(h.state, h.reason) for h in events if isinstance(h, ProviderHealth)]
    assert states[-1] == ("up", None)
    degraded = [reason for state, reason in states if state != "up"]
    assert degraded and all("BTC/USDT trades" in (r or "") for r in degraded)
    assert all("NetworkError: socket closed" in (r or "") for r in degraded)
    assert provider.errors == 1
    assert ("watch_ticker", "BTC/USDT") in fake.calls and ("watch_trades", "BTC/USDT") in fake.calls
