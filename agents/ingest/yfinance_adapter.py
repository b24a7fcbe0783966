"""yfinance adapter: Yahoo Finance quotes, polled in a worker thread.

yfinance is synchronous (requests under the hood), so every call runs in
``asyncio.to_thread``: the event loop, and every other provider, keep running while Yahoo
answers or times out. ``info_to_tick`` is the pure part: it reads the quote fields Yahoo's
quote API returns and ``Ticker.info`` passes through (``regularMarketPrice``,
``regularMarketTime`` in epoch seconds, ``bid``/``ask``, ``bidSize``/``askSize``,
``regularMarketVolume``). yfinance is imported only when the provider polls.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from agents.ingest.base import Clock, Event, wall_clock_ms
from agents.ingest.errors import MALFORMED, PayloadError, ProviderError
from agents.ingest.polling import PollingConfig, PollingProvider, rejected
from agents.ingest.resilience import TokenBucket
from schemas import symbols as sym
from schemas.records import RawTick

__all__ = ["YFinanceProvider", "info_to_tick"]

#: The provider id in records: the FIML seed's name for Yahoo Finance.
PROVIDER_ID = "yahoo_finance"

Fetcher = Callable[[str], Mapping[str, Any]]


def _positive(value: Any) -> float | None:
    # Yahoo sends 0 for "no bid/ask" outside market hours; 0 is not a price.
    return float(value) if value not in (None, "") and float(value) > 0 else None


def info_to_tick(
    info: Mapping[str, Any], *, symbol: str, seq: int, ingest_time_ms: int,
    provider: str = PROVIDER_ID,
) -> RawTick:  # fmt: skip
    """A Yahoo quote (``Ticker.info``) as a ``RawTick`` of canonical ``symbol``.

    Raises:
        PayloadError: no price, or fields the schema refuses.
    """
    try:
        price = _positive(info.get("regularMarketPrice")) or _positive(info.get("currentPrice"))
        if price is None:
            raise PayloadError(f"Yahoo quote for {symbol} has no regularMarketPrice")
        stamp = info.get("regularMarketTime")
        return RawTick(
            provider=provider, symbol=symbol, provider_symbol=str(info.get("symbol", symbol)),
            asset_type=sym.classify(symbol), market=info.get("exchange"), price=price,
            bid=_positive(info.get("bid")), ask=_positive(info.get("ask")),
            bid_size=float(info["bidSize"]) if info.get("bidSize") is not None else None,
            ask_size=float(info["askSize"]) if info.get("askSize") is not None else None,
            volume=_positive(info.get("regularMarketVolume")),
            event_time_ms=int(stamp) * 1000 if stamp else ingest_time_ms,
            ingest_time_ms=ingest_time_ms, seq=seq,
        )  # fmt: skip
    except MALFORMED as error:
        raise PayloadError(f"{type(error).__name__}: {error}") from None


def _yahoo_info(ticker: str) -> Mapping[str, Any]:
    import yfinance

    info: Mapping[str, Any] = yfinance.Ticker(ticker).info
    return info


class YFinanceProvider(PollingProvider):
    """Yahoo Finance quotes for equities, indices, fx and crypto.

    Args:
        interval: seconds between poll cycles (Yahoo has no published limit; be gentle).
        per_minute: requests per minute through the rate limiter.
        fetcher: ticker -> quote dict, blocking; defaults to ``yfinance.Ticker(t).info``
            (tests pass a fake).
    """

    def __init__(
        self,
        symbols: Sequence[str],
        *,
        interval: float = 15.0,
        per_minute: float = 60.0,
        fetcher: Fetcher = _yahoo_info,
        clock: Clock = wall_clock_ms,
        config: PollingConfig | None = None,
        max_cycles: int | None = None,
    ) -> None:
        canonical = [sym.normalize(s) for s in symbols]
        self.tickers = {s: sym.to_yfinance(s) for s in canonical}
        config = config or PollingConfig(interval=interval)
        config.limiter = config.limiter or TokenBucket(per_minute, 60.0, burst=len(canonical))
        super().__init__(PROVIDER_ID, canonical, config, clock, max_cycles)
        self.fetcher = fetcher

    async def _fetch(self, symbol: str) -> list[Event]:
        try:
            info = await asyncio.to_thread(self.fetcher, self.tickers[symbol])
        except Exception as error:  # yfinance raises requests/curl errors of many types
            ticker = self.tickers[symbol]
            raise ProviderError(f"yfinance {ticker}: {type(error).__name__}: {error}") from None
        if not info or ("regularMarketPrice" not in info and "currentPrice" not in info):
            # yfinance returns a near-empty dict instead of raising when Yahoo is unreachable.
            raise ProviderError(f"Yahoo returned no quote for {self.tickers[symbol]}")
        seq = self.next_seq()
        try:
            return [info_to_tick(info, symbol=symbol, seq=seq, ingest_time_ms=self.clock())]
        except PayloadError as error:
            return [rejected(self.name, dict(info), error, symbol)]
