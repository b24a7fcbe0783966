"""Per-symbol state of the arbitration: everything a restarted worker needs, as bytes.

One ``SymbolState`` per symbol is the value of the Faust table (key: the symbol). It holds the
latest quote of each provider, their learned statistics, the open candles, the trade
de-duplication memory, and the offsets of the last raw records applied, which make a replay
after a crash skip what the state already contains.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import orjson

from agents.arbitration.core.candles import SymbolCandles
from agents.arbitration.core.consensus import Quote
from agents.arbitration.core.copies import Agreement
from agents.arbitration.core.lags import LagLearner
from agents.arbitration.core.reliability import ProviderStats
from agents.arbitration.core.volatility import Volatility

__all__ = ["SymbolState"]

TradeKey = tuple[float, float, int]  # (price, amount, event time): provider-independent


@dataclass(slots=True)
class SymbolState:
    symbol: str
    asset_type: str
    partition: int
    candles: SymbolCandles = field(default_factory=SymbolCandles.new)
    quotes: dict[str, Quote] = field(default_factory=dict)
    stats: dict[str, ProviderStats] = field(default_factory=dict)
    newest_ms: int = -1
    # trade key -> provider -> how many trades with that key the provider reported
    trade_keys: dict[TradeKey, dict[str, int]] = field(default_factory=dict)
    trade_ids: dict[str, int] = field(default_factory=dict)  # "provider\x00id" -> event time
    duplicates: int = 0
    volatility: Volatility = field(default_factory=Volatility)
    agreement: Agreement = field(default_factory=Agreement)
    lags: dict[str, LagLearner] = field(default_factory=dict)  # provider -> its learner
    last_quote_ms: int = -1  # event time of its last fiml.quotes record (the quote throttle)

    def to_bytes(self) -> bytes:
        return orjson.dumps(
            [
                5,
                self.symbol,
                self.asset_type,
                self.partition,
                self.candles.to_list(),
                [
                    [q.provider, q.price, q.time_ms, q.bid, q.ask, q.since_ms]
                    for q in self.quotes.values()
                ],
                {p: s.to_list() for p, s in self.stats.items()},
                self.newest_ms,
                [[k[0], k[1], k[2], v] for k, v in self.trade_keys.items()],
                self.trade_ids,
                self.duplicates,
                self.volatility.to_list(),
                self.agreement.to_list(),
                {p: lag.to_list() for p, lag in self.lags.items()},
                self.last_quote_ms,
            ]
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> SymbolState:
        """Raises: ValueError (or orjson.JSONDecodeError) if ``data`` is not a saved state."""
        saved = orjson.loads(data)
        # version 2 (before issue 16) had no volatility: it starts from the prior
        (_v, symbol, asset, partition, candles, quotes, stats, newest, keys, ids, dups) = saved[:11]
        # version 3 (the first issue-16 build) had no hidden lags: they are learned again
        version = saved[0]
        volatility = Volatility.from_list(saved[11]) if version >= 3 else Volatility()
        agreement = Agreement.from_list(saved[12]) if version >= 3 else Agreement()
        lags = {p: LagLearner.from_list(x) for p, x in saved[13].items()} if version >= 4 else {}
        # version 4 (before issue 19) had no quote throttle: the next quote goes at once
        last_quote_ms = int(saved[14]) if version >= 5 else -1
        return cls(
            symbol=symbol,
            asset_type=asset,
            partition=partition,
            candles=SymbolCandles.from_list(candles),
            quotes={q[0]: Quote(*q) for q in quotes},
            stats={p: ProviderStats.from_list(s) for p, s in stats.items()},
            newest_ms=newest,
            trade_keys={(k[0], k[1], k[2]): k[3] for k in keys},
            trade_ids=ids,
            duplicates=dups,
            volatility=volatility,
            agreement=agreement,
            lags=lags,
            last_quote_ms=last_quote_ms,
        )

    def prune(self, horizon_ms: int) -> None:
        """Forget trades older than ``horizon_ms`` (event time)."""
        self.trade_keys = {k: v for k, v in self.trade_keys.items() if k[2] >= horizon_ms}
        self.trade_ids = {k: t for k, t in self.trade_ids.items() if t >= horizon_ms}
