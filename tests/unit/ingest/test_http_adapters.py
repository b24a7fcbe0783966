"""Alpha Vantage, FMP and yfinance adapters on fixtures built from the documented formats."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from agents.ingest.alphavantage import (
    AlphaVantageProvider,
    check_body,
    exchange_rate_to_tick,
    global_quote_to_tick,
)
from agents.ingest.base import Rejected
from agents.ingest.errors import ProviderError
from agents.ingest.fmp import FmpProvider, quote_to_tick
from agents.ingest.polling import PollingConfig
from agents.ingest.resilience import Backoff
from agents.ingest.yfinance_adapter import YFinanceProvider, info_to_tick
from schemas.records import ProviderHealth, RawTick

FIXTURES = Path(__file__).parent / "fixtures"


def _load(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


async def _no_sleep(_: float) -> None:
    return None


def _fast() -> PollingConfig:
    return PollingConfig(interval=0, attempts=2, backoff=Backoff(base=0), sleep=_no_sleep)


def test_alpha_vantage_global_quote_and_exchange_rate() -> None:
    tick = global_quote_to_tick(_load("alphavantage_global_quote.json"), symbol="IBM", seq=1,
                                ingest_time_ms=5)  # fmt: skip
    assert (tick.price, tick.volume, tick.event_time_ms) == (169.21, 3217411.0, 5)
    fx = exchange_rate_to_tick(_load("alphavantage_exchange_rate.json"), symbol="BTC/USD",
                               seq=2, ingest_time_ms=5)  # fmt: skip
    assert (fx.price, fx.bid, fx.ask) == (66210.52, 66210.51, 66210.52)
    assert fx.provider_symbol == "BTC/USD"
    assert fx.event_time_ms == 1718392861000  # 2024-06-14 19:21:01 UTC


def test_alpha_vantage_refusals() -> None:
    with pytest.raises(ProviderError) as note:
        check_body(_load("alphavantage_note.json"))
    assert note.value.retryable and "5 calls per minute" in str(note.value)
    with pytest.raises(ProviderError) as error:
        check_body(_load("alphavantage_error.json"))
    assert not error.value.retryable


def test_fmp_quote() -> None:
    tick = quote_to_tick(_load("fmp_quote.json"), symbol="AAPL", seq=0, ingest_time_ms=1)
    assert (tick.price, tick.event_time_ms, tick.volume) == (232.8, 1738702801000, 44489128.0)


def test_yfinance_info() -> None:
    tick = info_to_tick(_load("yfinance_info.json"), symbol="MSFT", seq=0, ingest_time_ms=1)
    assert (tick.price, tick.bid, tick.ask) == (415.6, 415.5, 415.75)
    assert tick.event_time_ms == 1718395201000


async def test_fmp_provider_through_mock_transport() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.params["symbol"] == "AAPL":
            return httpx.Response(200, json=_load("fmp_quote.json"))
        return httpx.Response(200, json=[])  # unknown symbol

    provider = FmpProvider(["AAPL", "ZZZZ"], api_key="k", transport=httpx.MockTransport(handler),
                           config=_fast(), max_cycles=1)  # fmt: skip
    async with provider:
        events = [e async for e in provider]
    assert [type(e) for e in events] == [RawTick, Rejected, ProviderHealth]
    assert seen[0].url.params["apikey"] == "k"


async def test_alpha_vantage_rate_limited_goes_down_with_reason() -> None:
    note = _load("alphavantage_note.json")
    transport = httpx.MockTransport(lambda r: httpx.Response(200, json=note))
    provider = AlphaVantageProvider(["AAPL"], api_key="k", transport=transport, config=_fast(),
                                    max_cycles=1)  # fmt: skip
    async with provider:
        events = [e async for e in provider]
    (health,) = events
    assert isinstance(health, ProviderHealth) and health.state == "down"
    assert "5 calls per minute" in (health.reason or "")


def test_missing_api_keys_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ALPHAVANTAGE_API_KEY", raising=False)
    monkeypatch.delenv("FMP_API_KEY", raising=False)
    with pytest.raises(ProviderError, match="ALPHAVANTAGE_API_KEY"):
        AlphaVantageProvider(["AAPL"])
    with pytest.raises(ProviderError, match="FMP_API_KEY"):
        FmpProvider(["AAPL"])


async def test_yfinance_failure_is_down_and_does_not_block() -> None:
    def broken(ticker: str) -> dict[str, Any]:
        raise ConnectionError("no route to host")

    provider = YFinanceProvider(["AAPL", "BTC/USD"], fetcher=broken, config=_fast(), max_cycles=1)
    async with provider:
        events = [e async for e in provider]
    (health,) = events
    assert isinstance(health, ProviderHealth) and health.state == "down"
    assert "no route to host" in (health.reason or "")
    assert "BTC-USD" in (health.reason or "")  # the Yahoo ticker named in the reason
