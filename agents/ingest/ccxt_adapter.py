"""ccxt adapter: any ccxt exchange by id, streaming where it can, REST polling where not.

With ``mode="auto"`` the adapter uses ccxt pro's ``watch_ticker`` / ``watch_trades`` when
``exchange.has["watchTicker"]`` (WebSocket), else ``fetch_ticker`` / ``fetch_trades`` polled
through the shared ``PollingProvider`` loop. ``ticker_to_tick`` and ``trade_to_raw`` are the
pure part, tested offline on ccxt's own recorded responses. ccxt is imported only when the
provider starts, so importing this module is cheap.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, Literal

from agents.ingest.base import Clock, Event, ProviderState, wall_clock_ms
from agents.ingest.errors import MALFORMED, PayloadError, ProviderError
from agents.ingest.polling import PollingConfig, PollingProvider, rejected
from schemas import symbols as sym
from schemas.records import RawTick, RawTrade

__all__ = ["CcxtProvider", "classify_ccxt_error", "ticker_to_tick", "trade_to_raw"]

Mode = Literal["auto", "stream", "poll"]


def _num(value: Any) -> float | None:
    return None if value is None else float(value)


def ticker_to_tick(
    ticker: Mapping[str, Any], *, provider: str, symbol: str, seq: int, ingest_time_ms: int
) -> RawTick:
    """A ccxt unified ticker as a ``RawTick`` of canonical ``symbol``.

    Price is ``last`` (else ``close``, else the bid/ask mid); the event time is the ticker's
    ``timestamp``, or ``ingest_time_ms`` when the exchange gives none (Kraken).

    Raises:
        PayloadError: no usable price, or a field the schema refuses.
    """
    try:
        bid, ask = _num(ticker.get("bid")), _num(ticker.get("ask"))
        price = _num(ticker.get("last")) or _num(ticker.get("close"))
        if price is None and bid and ask:
            price = (bid + ask) / 2
        if not price:
            raise PayloadError(f"ticker for {symbol} has no last, close or bid/ask")
        return RawTick(
            provider=provider, symbol=symbol, provider_symbol=str(ticker.get("symbol") or symbol),
            asset_type=sym.classify(symbol), price=price, bid=bid or None, ask=ask or None,
            bid_size=_num(ticker.get("bidVolume")), ask_size=_num(ticker.get("askVolume")),
            volume=_num(ticker.get("baseVolume")),
            event_time_ms=int(ticker.get("timestamp") or ingest_time_ms),
            ingest_time_ms=ingest_time_ms, seq=seq,
        )  # fmt: skip
    except MALFORMED as error:  # pydantic's ValidationError is a ValueError
        raise PayloadError(f"{type(error).__name__}: {error}") from None


def trade_to_raw(
    trade: Mapping[str, Any], *, provider: str, symbol: str, seq: int, ingest_time_ms: int
) -> RawTrade:
    """A ccxt unified trade as a ``RawTrade`` of canonical ``symbol``.

    Raises:
        PayloadError: missing price, amount or timestamp, or a field the schema refuses.
    """
    try:
        if trade.get("price") is None or trade.get("amount") is None or not trade.get("timestamp"):
            raise PayloadError(f"trade for {symbol} lacks price, amount or timestamp")
        side = trade.get("side")
        return RawTrade(
            provider=provider, symbol=symbol, provider_symbol=str(trade.get("symbol") or symbol),
            asset_type=sym.classify(symbol), trade_id=str(trade.get("id") or seq),
            price=float(trade["price"]), amount=float(trade["amount"]),
            side=side if side in ("buy", "sell") else None,
            event_time_ms=int(trade["timestamp"]), ingest_time_ms=ingest_time_ms, seq=seq,
        )  # fmt: skip
    except MALFORMED as error:
        raise PayloadError(f"{type(error).__name__}: {error}") from None


def classify_ccxt_error(error: Exception) -> ProviderError:
    """A ccxt exception as a ``ProviderError``: network trouble and rate limits are retryable;
    bad symbols, credentials and unsupported calls are not."""
    import ccxt

    message = f"{type(error).__name__}: {error}".strip()
    permanent = (ccxt.BadSymbol, ccxt.AuthenticationError, ccxt.PermissionDenied, ccxt.NotSupported)
    if isinstance(error, permanent):
        return ProviderError(message, retryable=False)
    return ProviderError(message, retryable=True)


class CcxtProvider(PollingProvider):
    """Ticks (and trades) of crypto ``symbols`` from the ccxt exchange ``exchange_id``.

    Args:
        mode: ``auto`` streams when the exchange supports it, ``stream`` / ``poll`` force one.
        trades: also watch or fetch trades.
        options: passed to the ccxt exchange constructor (API keys, timeouts ...).
    """

    def __init__(
        self,
        exchange_id: str,
        symbols: Sequence[str],
        *,
        mode: Mode = "auto",
        trades: bool = True,
        options: Mapping[str, Any] | None = None,
        config: PollingConfig | None = None,
        clock: Clock = wall_clock_ms,
    ) -> None:
        canonical = [sym.normalize(s) for s in symbols]
        for s in canonical:
            sym.to_ccxt(s)  # refuse non-crypto symbols now, with the reason
        super().__init__(f"ccxt_{exchange_id}", canonical, config, clock)  # the seed's id
        self.exchange_id = exchange_id
        self.mode = mode
        self.trades_enabled = trades
        self.options = {"enableRateLimit": True, "timeout": 10_000, **(options or {})}
        self.exchange: Any = None
        self.streaming = False
        self._last_trade: dict[str, tuple[int, str]] = {}

    async def _open(self) -> None:
        import ccxt.async_support as ccxt_async
        import ccxt.pro as ccxt_pro

        if self.mode != "poll" and hasattr(ccxt_pro, self.exchange_id):
            exchange = getattr(ccxt_pro, self.exchange_id)(dict(self.options))
            if exchange.has.get("watchTicker") or self.mode == "stream":
                self.exchange, self.streaming = exchange, True
                return
            await exchange.close()
        if not hasattr(ccxt_async, self.exchange_id):
            raise ProviderError(f"ccxt has no exchange {self.exchange_id!r}", retryable=False)
        self.exchange = getattr(ccxt_async, self.exchange_id)(dict(self.options))

    async def _close(self) -> None:
        if self.exchange is not None:
            exchange, self.exchange = self.exchange, None
            await exchange.close()

    def _produce(self) -> AsyncIterator[Event]:
        return self._stream() if self.streaming else super()._produce()

    # --- REST ---------------------------------------------------------------------------------

    async def _fetch(self, symbol: str) -> list[Event]:
        try:
            ticker = await self.exchange.fetch_ticker(sym.to_ccxt(symbol))
            raw_trades = []
            if self.trades_enabled and self.exchange.has.get("fetchTrades"):
                raw_trades = await self.exchange.fetch_trades(sym.to_ccxt(symbol), limit=100)
        except Exception as error:
            raise classify_ccxt_error(error) from None
        events = self._convert_ticker(symbol, ticker)
        last = self._last_trade.get(symbol, (0, ""))
        for trade in raw_trades:  # REST returns recent trades again: emit only newer ones
            mark = (int(trade.get("timestamp") or 0), str(trade.get("id") or ""))
            if mark > last:
                events.extend(self._convert_trade(symbol, trade))
                self._last_trade[symbol] = max(self._last_trade.get(symbol, mark), mark)
        return events

    def _convert_ticker(self, symbol: str, ticker: Mapping[str, Any]) -> list[Event]:
        try:
            return [
                ticker_to_tick(
                    ticker,
                    provider=self.name,
                    symbol=symbol,
                    seq=self._seq,
                    ingest_time_ms=self.clock(),
                )
            ]
        except PayloadError as error:
            return [rejected(self.name, ticker, error, symbol)]
        finally:
            self._seq += 1

    def _convert_trade(self, symbol: str, trade: Mapping[str, Any]) -> list[Event]:
        try:
            return [
                trade_to_raw(
                    trade,
                    provider=self.name,
                    symbol=symbol,
                    seq=self._seq,
                    ingest_time_ms=self.clock(),
                )
            ]
        except PayloadError as error:
            return [rejected(self.name, trade, error, symbol)]
        finally:
            self._seq += 1

    # --- WebSocket ------------------------------------------------------------------------------

    async def _stream(self) -> AsyncIterator[Event]:
        queue: asyncio.Queue[list[Event] | tuple[str, str | None]] = asyncio.Queue(maxsize=1_000)
        kinds = ["ticker"] + (["trades"] if self.trades_enabled else [])
        watchers = [
            asyncio.create_task(self._watch(s, kind, queue), name=f"{self.name}-{s}-{kind}")
            for s in self.symbols
            for kind in kinds
        ]
        failing: dict[str, str] = {}
        healthy: set[str] = set()
        try:
            while True:
                item = await queue.get()
                if isinstance(item, tuple):  # (watcher, error or None): recompute the state
                    who, error = item
                    if error is None:
                        failing.pop(who, None)
                        healthy.add(who)
                    else:
                        failing[who] = error
                        healthy.discard(who)
                    health = self.transition(*self._stream_verdict(failing, len(healthy)))
                    if health is not None:
                        yield health
                    continue
                for event in item:
                    yield event
        finally:
            for task in watchers:
                task.cancel()
            await asyncio.gather(*watchers, return_exceptions=True)

    def _stream_verdict(
        self, failing: dict[str, str], healthy: int
    ) -> tuple[ProviderState, str | None]:
        # Down until some feed works: one watcher failing before the others have answered
        # is not evidence that the others work.
        if not failing:
            return ProviderState.UP, None
        reasons = "; ".join(f"{who}: {err}" for who, err in sorted(failing.items()))
        if healthy:
            return ProviderState.DEGRADED, reasons
        return ProviderState.DOWN, f"{self.name} unreachable: {reasons}"

    async def _watch(
        self, symbol: str, kind: str, queue: asyncio.Queue[list[Event] | tuple[str, str | None]]
    ) -> None:
        who, attempt, ok = f"{symbol} {kind}", 0, False
        breaker, backoff = self.config.breaker, self.config.backoff
        market = sym.to_ccxt(symbol)
        while True:
            try:
                breaker.check()
                if kind == "ticker":
                    events = self._convert_ticker(symbol, await self.exchange.watch_ticker(market))
                else:
                    events = []
                    for trade in await self.exchange.watch_trades(market):
                        events.extend(self._convert_trade(symbol, trade))
                breaker.record_success()
            except asyncio.CancelledError:
                raise
            except Exception as error:
                failure = error if isinstance(error, ProviderError) else classify_ccxt_error(error)
                if not isinstance(error, ProviderError):
                    breaker.record_failure(error)
                self.errors += 1
                ok = False
                await queue.put((who, str(failure)))
                await self.config.sleep(backoff.delay(min(attempt, 10)))
                attempt += 1
                continue
            attempt = 0
            if not ok:
                ok = True
                await queue.put((who, None))
            await queue.put(events)
