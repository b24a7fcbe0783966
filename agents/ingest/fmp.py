"""Financial Modeling Prep adapter: the ``quote`` endpoint, API key from ``FMP_API_KEY``, the
free plan's 10 requests/minute (``FMP_PER_MINUTE`` to change it).

The endpoint answers a JSON list of quote objects (``symbol``, ``price``, ``volume``,
``timestamp`` in epoch **seconds**, ...); an unknown symbol gives ``[]`` and a bad key
``{"Error Message": ...}`` with HTTP 401/403.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from agents.ingest.base import Clock, Event, wall_clock_ms
from agents.ingest.errors import MALFORMED, PayloadError, ProviderError
from agents.ingest.http import HttpQuoteProvider
from agents.ingest.polling import PollingConfig, rejected
from agents.ingest.resilience import TokenBucket
from schemas import symbols as sym
from schemas.records import RawTick

__all__ = ["FmpProvider", "quote_to_tick"]

#: The provider id in records (the FIML seed's).
PROVIDER_ID = "fmp"
BASE_URL = "https://financialmodelingprep.com"
QUOTE_PATH = "/stable/quote"
FREE_PLAN_PER_MINUTE = 10


def quote_to_tick(
    body: Any, *, symbol: str, seq: int, ingest_time_ms: int, provider: str = PROVIDER_ID
) -> RawTick:
    """The first quote of an FMP ``quote`` response as a ``RawTick``.

    Raises:
        PayloadError: an empty list (unknown symbol), an error object, or invalid fields.
    """
    if isinstance(body, Mapping) and "Error Message" in body:
        raise PayloadError(f"FMP: {body['Error Message']}")
    if not isinstance(body, list) or not body or not isinstance(body[0], Mapping):
        raise PayloadError(f"FMP has no quote for {symbol} (unknown symbol?)")
    quote = body[0]
    try:
        stamp = quote.get("timestamp")
        return RawTick(
            provider=provider, symbol=symbol, provider_symbol=str(quote.get("symbol", symbol)),
            asset_type=sym.classify(symbol), price=float(quote["price"]),
            volume=float(quote["volume"]) if quote.get("volume") is not None else None,
            event_time_ms=int(stamp) * 1000 if stamp else ingest_time_ms,
            ingest_time_ms=ingest_time_ms, seq=seq,
        )  # fmt: skip
    except MALFORMED as error:
        raise PayloadError(f"{type(error).__name__}: {error}") from None


class FmpProvider(HttpQuoteProvider):
    """Quotes from FMP; ``api_key`` defaults to ``$FMP_API_KEY``.

    Raises (at construction):
        ProviderError: no API key (not retryable).
    """

    def __init__(
        self,
        symbols: Sequence[str],
        *,
        api_key: str | None = None,
        per_minute: float = float(os.environ.get("FMP_PER_MINUTE", FREE_PLAN_PER_MINUTE)),
        interval: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Clock = wall_clock_ms,
        config: PollingConfig | None = None,
        max_cycles: int | None = None,
    ) -> None:
        key = api_key or os.environ.get("FMP_API_KEY")
        if not key:
            raise ProviderError("set FMP_API_KEY to use FMP", retryable=False)
        self.api_key = key
        canonical = [sym.normalize(s) for s in symbols]
        self.fmp_symbols = {s: sym.to_fmp(s) for s in canonical}
        config = config or PollingConfig(interval=interval)
        config.limiter = config.limiter or TokenBucket(per_minute, 60.0, burst=2)
        super().__init__(
            PROVIDER_ID, canonical, base_url=os.environ.get("FMP_BASE_URL", BASE_URL),
            config=config, transport=transport, clock=clock, max_cycles=max_cycles,
        )  # fmt: skip

    async def _fetch(self, symbol: str) -> list[Event]:
        params = {"symbol": self.fmp_symbols[symbol], "apikey": self.api_key}
        body = await self.get_json(QUOTE_PATH, params)
        seq = self.next_seq()
        try:
            return [quote_to_tick(body, symbol=symbol, seq=seq, ingest_time_ms=self.clock())]
        except PayloadError as error:
            return [rejected(self.name, body, error, symbol)]
