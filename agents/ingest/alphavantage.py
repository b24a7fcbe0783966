"""Alpha Vantage adapter: ``GLOBAL_QUOTE`` for equities, ``CURRENCY_EXCHANGE_RATE`` for fx and
crypto, with the API key from ``ALPHAVANTAGE_API_KEY`` and the free plan's 5 requests/minute.

Alpha Vantage answers HTTP 200 even when it refuses: a rate-limit notice comes back as
``{"Note": ...}`` or ``{"Information": ...}`` (retryable) and a bad call as
``{"Error Message": ...}`` (not retryable); ``check_body`` turns those into errors.
``GLOBAL_QUOTE`` carries only the latest trading day, not a time, so its ticks are stamped with
the time they were received (documented in docs/INGESTION.md).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import httpx

from agents.ingest.base import Clock, Event, wall_clock_ms
from agents.ingest.errors import MALFORMED, PayloadError, ProviderError
from agents.ingest.http import HttpQuoteProvider
from agents.ingest.polling import PollingConfig, rejected
from agents.ingest.resilience import TokenBucket
from schemas import symbols as sym
from schemas.records import RawTick

__all__ = ["AlphaVantageProvider", "check_body", "exchange_rate_to_tick", "global_quote_to_tick"]

#: The provider id in records: the FIML seed's name for Alpha Vantage.
PROVIDER_ID = "alpha_vantage"
BASE_URL = "https://www.alphavantage.co"
FREE_PLAN_PER_MINUTE = 5


def check_body(body: Any) -> Mapping[str, Any]:
    """The body if it is data; else the refusal as an error.

    Raises:
        ProviderError: a rate-limit note (retryable) or an error message (not retryable).
    """
    if not isinstance(body, Mapping):
        raise ProviderError("Alpha Vantage answered with something other than an object")
    for key in ("Note", "Information"):
        if key in body:
            raise ProviderError(f"Alpha Vantage: {body[key]}", retryable=True)
    if "Error Message" in body:
        raise ProviderError(f"Alpha Vantage: {body['Error Message']}", retryable=False)
    return body


def global_quote_to_tick(
    body: Mapping[str, Any], *, symbol: str, seq: int, ingest_time_ms: int,
    provider: str = PROVIDER_ID,
) -> RawTick:  # fmt: skip
    """A ``GLOBAL_QUOTE`` response as a ``RawTick`` (event time = receive time).

    Raises:
        PayloadError: no ``Global Quote`` object (Alpha Vantage's answer for an unknown
            symbol is an empty one), or invalid fields.
    """
    try:
        quote = body.get("Global Quote")
        if not isinstance(quote, Mapping) or "05. price" not in quote:
            raise PayloadError(f"no Global Quote for {symbol} (unknown symbol?)")
        return RawTick(
            provider=provider, symbol=symbol, provider_symbol=str(quote.get("01. symbol", symbol)),
            asset_type=sym.classify(symbol), price=float(quote["05. price"]),
            volume=float(quote["06. volume"]) if quote.get("06. volume") else None,
            event_time_ms=ingest_time_ms, ingest_time_ms=ingest_time_ms, seq=seq,
        )  # fmt: skip
    except MALFORMED as error:
        raise PayloadError(f"{type(error).__name__}: {error}") from None


def exchange_rate_to_tick(
    body: Mapping[str, Any], *, symbol: str, seq: int, ingest_time_ms: int,
    provider: str = PROVIDER_ID,
) -> RawTick:  # fmt: skip
    """A ``CURRENCY_EXCHANGE_RATE`` response as a ``RawTick``; its ``6. Last Refreshed`` (in the
    ``7. Time Zone`` given, UTC in practice) is the event time.

    Raises:
        PayloadError: missing object or invalid fields.
    """
    try:
        rate = body.get("Realtime Currency Exchange Rate")
        if not isinstance(rate, Mapping) or "5. Exchange Rate" not in rate:
            raise PayloadError(f"no exchange rate for {symbol}")
        refreshed = datetime.fromisoformat(str(rate["6. Last Refreshed"]) + "+00:00")
        bid, ask = rate.get("8. Bid Price"), rate.get("9. Ask Price")
        source = f"{rate.get('1. From_Currency Code')}/{rate.get('3. To_Currency Code')}"
        return RawTick(
            provider=provider, symbol=symbol, provider_symbol=source,
            asset_type=sym.classify(symbol), price=float(rate["5. Exchange Rate"]),
            bid=float(bid) if bid not in (None, "", "-") else None,
            ask=float(ask) if ask not in (None, "", "-") else None,
            event_time_ms=int(refreshed.timestamp() * 1000), ingest_time_ms=ingest_time_ms,
            seq=seq,
        )  # fmt: skip
    except MALFORMED as error:
        raise PayloadError(f"{type(error).__name__}: {error}") from None


class AlphaVantageProvider(HttpQuoteProvider):
    """Quotes from Alpha Vantage; ``api_key`` defaults to ``$ALPHAVANTAGE_API_KEY``.

    Raises (at construction):
        ProviderError: no API key (not retryable), or a symbol Alpha Vantage cannot quote.
    """

    def __init__(
        self,
        symbols: Sequence[str],
        *,
        api_key: str | None = None,
        per_minute: float = float(os.environ.get("ALPHAVANTAGE_PER_MINUTE", FREE_PLAN_PER_MINUTE)),
        interval: float = 60.0,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Clock = wall_clock_ms,
        config: PollingConfig | None = None,
        max_cycles: int | None = None,
    ) -> None:
        key = api_key or os.environ.get("ALPHAVANTAGE_API_KEY")
        if not key:
            raise ProviderError("set ALPHAVANTAGE_API_KEY to use Alpha Vantage", retryable=False)
        self.api_key = key
        canonical = [sym.normalize(s) for s in symbols]
        self.params = {s: sym.to_alpha_vantage(s) for s in canonical}
        config = config or PollingConfig(interval=interval)
        config.limiter = config.limiter or TokenBucket(per_minute, 60.0, burst=1)
        super().__init__(
            PROVIDER_ID, canonical, base_url=os.environ.get("ALPHAVANTAGE_BASE_URL", BASE_URL),
            config=config, transport=transport, clock=clock, max_cycles=max_cycles,
        )  # fmt: skip

    async def _fetch(self, symbol: str) -> list[Event]:
        first, second = self.params[symbol]
        if second is None:
            params = {"function": "GLOBAL_QUOTE", "symbol": first}
        else:
            params = {"function": "CURRENCY_EXCHANGE_RATE", "from_currency": first,
                      "to_currency": second}  # fmt: skip
        body = check_body(await self.get_json("/query", params | {"apikey": self.api_key}))
        convert = global_quote_to_tick if second is None else exchange_rate_to_tick
        seq = self.next_seq()
        try:
            return [convert(body, symbol=symbol, seq=seq, ingest_time_ms=self.clock())]
        except PayloadError as error:
            return [rejected(self.name, body, error, symbol)]
