"""The arbitration step, without Kafka: raw records in, encoded derived records out.

``Processor`` is what the worker (and the tests, and ``rebuild``) drive. It is pure in the
sense that matters for event sourcing: its outputs are a function of the raw records it is fed,
in the order of their partition of ``fiml.raw``, and of the state it restores, never of a clock
or of how the records were batched. Ticks and trades share one topic, so a partition's order is
the processing order: a live run, a rebuild and a run restarted from any mark apply the same
records in the same order (docs/RELIABILITY.md, "One order").

Per partition it tracks the watermark (the largest live event time seen in the partition); when
the watermark passes a window's end plus the grace period, every symbol of the partition closes
that window, so a quiet symbol's candles close too.
"""

from __future__ import annotations

from collections.abc import Iterable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import NamedTuple

import orjson

from agents.arbitration.core.candles import CandleRecord
from agents.arbitration.core.checkpoint import Checkpoint
from agents.arbitration.core.consensus import ConsensusParams, ConsensusResult, Quote, consensus
from agents.arbitration.core.copies import copies_of
from agents.arbitration.core.lags import LagLearner
from agents.arbitration.core.reliability import ProviderStats
from agents.arbitration.core.state import SymbolState
from agents.arbitration.settings import ArbitrationSettings
from agents.deadletter import deadletter_headers
from schemas.codec import decode_raw, encode
from schemas.errors import DecodeError
from schemas.records import (
    AssetType,
    PriceUpdate,
    ProviderHealth,
    QuoteUpdate,
    RawTick,
    RawTrade,
    TradeUpdate,
    price_change,
)
from schemas.times import MAX_EPOCH_MS

__all__ = ["RAW", "Output", "Processor", "health_key"]

RAW = "fiml.raw"  # the logical topic the processor reads (ticks and trades)
_INF = float("inf")

#: (logical topic, key, value, partition, headers): partition None lets the producer choose.
Output = tuple[str, bytes | None, bytes, int | None, list[tuple[str, bytes]] | None]


class OutOfTimeError(ValueError):
    """A raw record whose event time is outside the bounds (``agents.timebounds``)."""


class SymbolLimitError(ValueError):
    """A raw record of a new symbol in a partition that holds ``max_symbols`` already."""


def _bps2(a: float, b: float) -> float:
    """The squared relative difference of two prices, in bp²."""
    d = (a / b - 1.0) * 1e4
    return d * d


def health_key(provider: str, symbol: str) -> bytes:
    """The ``fiml.provider.health`` key of a per-symbol measure: ``provider|symbol``. The
    ingestion agents' provider-wide records (up, down and why) are keyed by the id alone."""
    return f"{provider}|{symbol}".encode()


@dataclass(slots=True)
class _Partition:
    applied: int = -1  # the offset of the last raw record applied (or dead-lettered)
    watermark: int = -1
    next_close: int = -1
    symbols: dict[str, SymbolState] = field(default_factory=dict)


class _BestQuote(NamedTuple):
    """The consensus best bid and ask, and the providers whose quotes they are the medians of."""

    bid: float
    ask: float
    providers: list[str]


class Processor:
    """Turns raw ticks and trades into prices, quotes, trades, candles and provider health.

    A partition starts empty, or from its mark (``restore``): every symbol state of the
    partition, its watermark and the offset of the last record applied, saved as one record
    (``mark``). Outputs are kept per source partition (``drain_partitions``), because each
    partition's outputs and mark are written in one Kafka transaction (``agent.py``).
    """

    def __init__(self, settings: ArbitrationSettings) -> None:
        self.settings = settings
        self.marks: set[int] = set()  # partitions whose mark changed since it was last saved
        self._saved: dict[int, dict[str, bytes]] = {}  # partition -> symbol -> last state
        self._partitions: dict[int, _Partition] = {}
        self._params = {a: ConsensusParams(stale_ms=ms) for a, ms in settings.stale_ms.items()}
        self._outputs: dict[int, list[Output]] = {}  # source partition -> outputs
        #: partition -> its symbols whose state changed since the partition's last mark (a
        #: symbol may be in two partitions, each with its own state, marked on its own)
        self.dirty: dict[int, set[str]] = {}
        self.poison = 0
        self.out_of_time = 0  # of the poison: event time outside the bounds (timebounds.py)
        self.invalid = 0  # derived records that failed their checks (dead-lettered, not written)
        self._applying = -1  # the offset of the record applied (named by an invalid output)
        self.skipped = 0

    # -- life cycle -------------------------------------------------------------------------

    def restore(self, partition: int, mark: bytes | None) -> None:
        """Start ``partition`` from its saved mark (None: from nothing), dropping whatever this
        processor held of it.

        Raises:
            ValueError: ``mark`` is not a checkpoint of a version this build reads
                (``Checkpoint.from_bytes``).
        """
        self.forget((partition,))
        part = self._partitions[partition] = _Partition()
        if mark:
            checkpoint = Checkpoint.from_bytes(mark)
            part.applied, part.watermark = checkpoint.applied, checkpoint.watermark
            for saved in checkpoint.states:
                st = SymbolState.from_bytes(saved)
                part.symbols[st.symbol] = st
        self._refresh_next_close(part)

    def forget(self, partitions: Iterable[int]) -> None:
        """Drop cached state and unsent outputs of partitions this worker no longer owns (after
        a rebalance) or must restore again."""
        for p in set(partitions):
            self._partitions.pop(p, None)
            self._saved.pop(p, None)
            self._outputs.pop(p, None)
            self.marks.discard(p)
            self.dirty.pop(p, None)

    def drain_partitions(self) -> dict[int, list[Output]]:
        """The outputs since the last call, per source partition. Changed states wait for
        ``mark``."""
        outputs, self._outputs = self._outputs, {}
        return outputs

    def drain(self) -> list[Output]:
        """The outputs since the last call, in source partition order."""
        by_partition = self.drain_partitions()
        return [out for p in sorted(by_partition) for out in by_partition[p]]

    def resume_offset(self, partition: int) -> int | None:
        """The first offset of ``fiml.raw``'s partition not yet in the state (None: the state
        has none of it), so a consumer can resume exactly where the state ends."""
        part = self._partitions.get(partition)
        return None if part is None or part.applied < 0 else part.applied + 1

    def symbol_state(self, partition: int, symbol: str) -> SymbolState:
        """The state of ``symbol`` in ``partition`` (tests and tools read what was learned).

        Raises:
            KeyError: the partition holds no such symbol.
        """
        return self._partition(partition).symbols[symbol]

    def late_ticks(self) -> int:
        """Prices that arrived after their window was final (counted, never merged)."""
        return sum(st.candles.late for p in self._partitions.values() for st in p.symbols.values())

    def _partition(self, partition: int) -> _Partition:
        part = self._partitions.get(partition)
        if part is None:  # never restored: a caller without saved state (tests, bench)
            part = self._partitions[partition] = _Partition()
        return part

    def _state(self, part: _Partition, partition: int, rec: RawTick | RawTrade) -> SymbolState:
        symbol = rec.symbol
        st = part.symbols.get(symbol)
        if st is None:  # not in the partition's mark: new
            if len(part.symbols) >= self.settings.max_symbols:
                raise SymbolLimitError(
                    f"partition {partition} already holds {len(part.symbols):,} symbols "
                    f"(FIML_ARB_MAX_SYMBOLS); a record of a new symbol is refused"
                )
            st = part.symbols[symbol] = SymbolState(symbol, rec.asset_type.value, partition)
        return st

    def _emit(self, partition: int, output: Output) -> None:
        outputs = self._outputs.get(partition)
        if outputs is None:
            outputs = self._outputs[partition] = []
        outputs.append(output)

    # -- records ----------------------------------------------------------------------------

    def process(self, key: bytes | None, value: bytes, partition: int, offset: int) -> None:
        """Apply one record of ``fiml.raw``; records of a partition must come in offset order.
        Never raises for bad input: a record that cannot be decoded, is out of its time bounds
        or breaks the arithmetic goes to the dead-letter output. A record at or before the
        last one applied is skipped (a replay after a restart)."""
        part = self._partition(partition)
        if offset <= part.applied:
            self.skipped += 1
            return
        part.applied = offset
        self.marks.add(partition)
        self._applying = offset
        try:
            record = decode_raw(value)
        except (DecodeError, ValueError, TypeError) as exc:
            self._dead(key, value, partition, offset, exc)
            return
        problem = self.settings.time_bounds.problem(
            record.event_time_ms, record.ingest_time_ms, record.asset_type.value, record.history
        )
        if problem is not None:
            self.out_of_time += 1
            self._dead(key, value, partition, offset, OutOfTimeError(problem))
            return
        try:
            st = self._state(part, partition, record)
        except Exception as exc:  # the symbol limit (SymbolLimitError): nothing changed
            self._dead(key, value, partition, offset, exc)
            return
        # Changed from here on, even if applying raises part-way: the next mark must carry the
        # state as it is, or a restart from it would not be where the uninterrupted run is.
        self.dirty.setdefault(partition, set()).add(st.symbol)
        try:
            self._apply(part, st, record, partition)
        except Exception as exc:
            # Whatever applying one record raises (an overflow near the float limit, or a bug
            # only this record reaches) is that record's fault: it is dead-lettered with the
            # exception's type and message, and the partition goes on. The same record raises
            # the same way on every run, so this keeps the outputs a function of the log.
            self._dead(key, value, partition, offset, exc)

    def process_many(
        self, partition: int, records: Iterable[tuple[bytes | None, bytes, int]]
    ) -> None:
        """``process`` of each (key, value, offset) of one fetch of ``partition``, in order
        (the compiled core takes a fetch in one call; this keeps the two interchangeable)."""
        for key, value, offset in records:
            self.process(key, value, partition, offset)

    def mark(self, partition: int) -> bytes:
        """The partition's mark: the offset of the last record applied, the watermark and
        every symbol state, as one record. Only the states changed since the previous mark are
        serialised again."""
        part = self._partition(partition)
        states = self._saved.setdefault(partition, {})
        changed = self.dirty.pop(partition, set())
        for symbol, st in part.symbols.items():
            if symbol in changed or symbol not in states:  # or restored and never changed since
                states[symbol] = st.to_bytes()
        self.marks.discard(partition)
        return Checkpoint(
            part.applied, part.watermark, tuple(states[k] for k in sorted(states))
        ).to_bytes()

    def _dead(
        self, key: bytes | None, value: bytes, partition: int, offset: int, exc: Exception
    ) -> None:
        self.poison += 1
        reason = f"{type(exc).__name__}: {exc}"
        self._emit(
            partition,
            (
                "fiml.deadletter",
                key,
                value,
                None,
                deadletter_headers(reason, RAW, partition, offset),
            ),
        )

    def _apply(
        self, part: _Partition, st: SymbolState, rec: RawTick | RawTrade, partition: int
    ) -> None:
        t = rec.event_time_ms
        if isinstance(rec, RawTrade):
            # Checked before anything changes: a volume of infinity is null on the wire. The
            # day's candle holds the largest volume of every window that contains the trade.
            day = st.candles.day(t)
            if not rec.amount + (day.volume if day is not None else 0.0) < _INF:
                raise OverflowError(f"amount {rec.amount!r} overflows the day's volume")
        if t > part.watermark and not rec.history:  # history never moves the live watermark
            part.watermark = t
            if 0 <= part.next_close <= t:
                self._close_partition(part, partition)
        if t > st.newest_ms:
            st.newest_ms = t
        if isinstance(rec, RawTrade):
            if not self._new_trade(st, rec):
                return
            bid, ask = self._spread(st, rec.provider)
        else:
            bid, ask = rec.bid, rec.ask
        old = st.quotes.get(rec.provider)
        if old is None or old.time_ms <= t:  # a provider's older tick never replaces its newer
            same = old is not None and old.price == rec.price
            since = old.news_ms if old is not None and same else None
            st.quotes[rec.provider] = Quote(rec.provider, rec.price, t, bid, ask, since)
        self._price(st, rec, partition)
        if isinstance(rec, RawTrade) and self._counted(st, rec):
            st.candles.on_trade(t, rec.amount)
            self._emit(
                partition,
                (
                    "fiml.trades",
                    st.symbol.encode(),
                    encode(
                        TradeUpdate(
                            symbol=st.symbol,
                            trade_id=f"{rec.provider}:{rec.trade_id}",
                            price=rec.price,
                            amount=rec.amount,
                            side=rec.side,
                            providers=[rec.provider],
                            event_time_ms=t,
                        )
                    ),
                    partition,
                    None,
                ),
            )
        updates = st.candles.updates(st.symbol, st.newest_ms, self.settings.throttle_ms)
        if updates:  # throttled: most ticks have none
            self._candles(updates, st, partition)
        if not st.candles.started:  # once every interval has a window, only closes move it
            nxt = st.candles.next_close_ms(self.settings.grace_ms)
            if nxt >= 0 and (part.next_close < 0 or nxt < part.next_close):
                part.next_close = nxt
            st.candles.started = all(x.closed_until >= 0 for x in st.candles.series)

    @staticmethod
    def _spread(st: SymbolState, provider: str) -> tuple[float | None, float | None]:
        old = st.quotes.get(provider)
        return (old.bid, old.ask) if old is not None else (None, None)

    def _new_trade(self, st: SymbolState, rec: RawTrade) -> bool:
        """False if this provider already reported this trade id (a replayed duplicate)."""
        ident = f"{rec.provider}\x00{rec.trade_id}"
        if ident in st.trade_ids:
            st.duplicates += 1
            return False
        st.trade_ids[ident] = rec.event_time_ms
        if len(st.trade_ids) > 64:  # forget what is older than the de-duplication horizon
            st.prune(st.newest_ms - self.settings.dedup_ms)
        return True

    def _counted(self, st: SymbolState, rec: RawTrade) -> bool:
        """True unless another provider already reported the same (price, amount, time):
        the n-th such trade of this provider duplicates another provider's n-th."""
        counts = st.trade_keys.setdefault((rec.price, rec.amount, rec.event_time_ms), {})
        n = counts.get(rec.provider, 0) + 1
        counts[rec.provider] = n
        if any(c >= n for p, c in counts.items() if p != rec.provider):
            st.duplicates += 1
            return False
        return True

    def _price(self, st: SymbolState, rec: RawTick | RawTrade, partition: int) -> None:
        asset = st.asset_type
        params = self._params.get(asset) or ConsensusParams(stale_ms=self.settings.stale_for(asset))
        provider, now = rec.provider, st.newest_ms
        stats = st.stats.get(provider)
        if stats is None:
            stats = st.stats[provider] = ProviderStats()
        stats.on_tick(rec.event_time_ms, now)
        copies = st.agreement.copies()
        result = consensus(
            list(st.quotes.values()), now, st.stats, st.volatility.per_ms(), params, copies
        )
        if result is None:
            return
        price, band_low, band_high = result.price, result.band_low, result.band_high
        confidence, used, rejected = result.confidence, result.used, result.rejected
        key = st.symbol.encode()
        if not (0.0 < band_low <= price <= band_high < _INF and 0.0 <= confidence <= 1.0):
            # Only extreme inputs get here (prices near the float limit overflow the band or the
            # variance): the record would carry a null or infinite band or a NaN confidence
            # (JSON null), so it is dead-lettered, not written. NaN fails every comparison.
            self._invalid(
                st,
                partition,
                "PriceUpdate",
                "0 < band_low <= price <= band_high < inf and 0 <= confidence <= 1",
                price=price,
                band_low=band_low,
                band_high=band_high,
                confidence=confidence,
            )
            return
        self._learn(st, rec, stats, result, copies)
        st.candles.on_price(rec.event_time_ms, price)
        # The seed's keys: change and volume against the symbol's UTC day (its 1d candle, so a
        # client can check them), and the provider nearest the consensus.
        day = st.candles.day(now) or st.candles.day(rec.event_time_ms)
        day_open = day.open if day is not None else price
        _, change_percent = price_change(price, day_open)  # the model derives the change
        if not -_INF < change_percent < _INF:  # a day open 1e300 times smaller than the price
            self._invalid(
                st,
                partition,
                "PriceUpdate",
                "change_percent is not finite",
                price=price,
                day_open=day_open,
            )
            return
        nearest, distance = used[0], float("inf")
        for p in used:  # sorted by provider: ties go to the first name
            d = abs(st.quotes[p].price - price)
            if d < distance:
                nearest, distance = p, d
        quote = self._consensus_quote(st, used, partition)
        record = PriceUpdate(
            symbol=st.symbol,
            asset_type=AssetType(asset),
            price=price,
            confidence=confidence,
            band_low=band_low,
            band_high=band_high,
            providers_used=list(used),
            providers_rejected=list(rejected),
            flags=list(result.flags),
            event_time_ms=now,
            source_ticks=len(used) + len(rejected),
            provider=nearest,
            day_open=day_open,
            volume=day.volume if day is not None and day.trades else None,
            bid=quote.bid if quote is not None else None,
            ask=quote.ask if quote is not None else None,
        )
        self._emit(partition, ("fiml.prices", key, encode(record), partition, None))
        if quote is not None and (
            st.last_quote_ms < 0 or now - st.last_quote_ms >= self.settings.quote_ms
        ):
            st.last_quote_ms = now
            self._quote(st, quote, key, partition)
        self._health(st, provider, stats, params.stale_ms)
        # the others: one that has gone silent while this one ticks is down now
        for other, other_stats in st.stats.items():
            if (
                other != provider
                and other_stats.last_state != "down"
                and other_stats.silent(now, params.stale_ms)
            ):
                self._health(st, other, other_stats, params.stale_ms)

    @staticmethod
    def _learn(
        st: SymbolState,
        rec: RawTick | RawTrade,
        stats: ProviderStats,
        result: ConsensusResult,
        copies: AbstractSet[tuple[str, str]],
    ) -> None:
        """What this consensus teaches: who is excluded now (hysteresis), the ticking
        provider's noise against the others' estimate (reliability.py) and its hidden lag
        (lags.py), which providers copy each other (copies.py) and the symbol's drift
        (volatility.py)."""
        for provider in result.used:
            st.stats[provider].excluded = False
        for provider in result.rejected:
            st.stats[provider].excluded = True
        me = rec.provider
        if me in result.rejected:
            stats.rejections += 1
        quote = st.quotes[me]
        drift = st.volatility.per_ms()
        if me in result.used and quote.time_ms == rec.event_time_ms:
            stats.learn_white(quote.price, quote.time_ms)
            # its quote against the others' estimate of the truth it shows (its lag's time)
            others = result.without({me} | copies_of(me, copies), quote.news_ms - stats.info_lag_ms)
            if others is not None:
                stats.learn(_bps2(quote.price, others.price), others.error_var)
                learner = st.lags.get(me)
                if learner is None:
                    learner = st.lags[me] = LagLearner()
                lag = learner.observe(
                    quote.time_ms, quote.price, others.price, others.stated_ms, drift
                )
                if lag is not None:
                    stats.info_lag_ms = lag
            st.agreement.observe(
                me,
                [
                    (
                        q.provider,
                        q.time_ms,
                        _bps2(quote.price, q.price),
                        stats.white_noise_var + st.stats[q.provider].white_noise_var,
                    )
                    for q in result.quotes
                    if q.provider != me
                ],
            )
        st.volatility.observe(st.newest_ms, result.price, result.variance_bps2)

    def _invalid(
        self, st: SymbolState, partition: int, model: str, rule: str, **values: float
    ) -> None:
        """A derived record that fails its ``model``'s ``rule``: dead-lettered with the raw
        record that produced it (topic, partition, offset), never written."""
        self.invalid += 1
        offset = self._applying
        body = {
            "symbol": st.symbol,
            "event_time_ms": st.newest_ms,
            **{k: v if -_INF < v < _INF else str(v) for k, v in values.items()},
        }
        self._emit(
            partition,
            (
                "fiml.deadletter",
                st.symbol.encode(),
                orjson.dumps(body),
                None,
                deadletter_headers(
                    f"invalid {model}: {rule} does not hold", RAW, partition, offset
                ),
            ),
        )

    def _consensus_quote(
        self, st: SymbolState, used: tuple[str, ...], partition: int
    ) -> _BestQuote | None:
        """The consensus best bid and ask (the medians, lower middle, of the quotes of the
        providers used that carry both) and those providers; None if none does, or if the
        medians fail QuoteUpdate's rule (dead-lettered)."""
        bids: list[float] = []
        asks: list[float] = []
        providers: list[str] = []
        quotes = st.quotes
        for p in used:  # sorted by provider
            q = quotes[p]
            if q.bid is not None and q.ask is not None:
                bids.append(q.bid)
                asks.append(q.ask)
                providers.append(p)
        if not bids:
            return None
        if len(bids) > 1:
            bids.sort()
            asks.sort()
        bid, ask = bids[(len(bids) - 1) // 2], asks[(len(asks) - 1) // 2]
        if not (0.0 < bid < _INF and 0.0 < ask < _INF and ask - bid < _INF):
            self._invalid(st, partition, "QuoteUpdate", "0 < bid, ask < inf", bid=bid, ask=ask)
            return None
        return _BestQuote(bid, ask, providers)

    def _quote(self, st: SymbolState, quote: _BestQuote, key: bytes, partition: int) -> None:
        """The ``fiml.quotes`` record of ``quote``, at the price's event time."""
        record = QuoteUpdate(
            symbol=st.symbol,
            bid=quote.bid,
            ask=quote.ask,
            providers=quote.providers,
            event_time_ms=st.newest_ms,
        )
        self._emit(partition, ("fiml.quotes", key, encode(record), partition, None))

    def _health(self, st: SymbolState, provider: str, stats: ProviderStats, stale: int) -> None:
        reliability = stats.reliability(stale)
        now = st.newest_ms
        state = stats.state(now, stale, reliability)
        if state == stats.last_state and now - stats.last_health_ms < self.settings.health_every_ms:
            return
        stats.last_state, stats.last_health_ms = state, now
        record = ProviderHealth(
            provider=provider,
            state=state,
            symbol=st.symbol,
            event_time_ms=now,
            reliability=min(max(reliability, 0.0), 1.0),
            error_bps=stats.error_bps,
            staleness_ms=float(max(now - stats.last_time_ms, 0)),
            ticks=stats.ticks,
            errors=stats.rejections,
        )
        # keyed per (provider, symbol): the topic is compacted, and under the provider alone
        # only the last symbol's measure would survive
        self._emit(
            st.partition,
            ("fiml.provider.health", health_key(provider, st.symbol), encode(record), 0, None),
        )

    def _candles(self, records: list[CandleRecord], st: SymbolState, partition: int) -> None:
        key = st.symbol.encode()
        for r in records:
            o, h, lo, c, v = r.open, r.high, r.low, r.close, r.volume
            if not (0.0 < lo <= min(o, c) and max(o, c) <= h < _INF and 0.0 <= v < _INF):
                self._invalid(
                    st,
                    partition,
                    "OHLCVUpdate",
                    "0 < low <= open, close <= high < inf and 0 <= volume < inf",
                    open=o,
                    high=h,
                    low=lo,
                    close=c,
                    volume=v,
                )
                continue
            if r.window_end_ms > MAX_EPOCH_MS:  # the last windows of 9999 end in the year 10000
                self._invalid(st, partition, "OHLCVUpdate", "window_end_ms <= MAX_EPOCH_MS")
                continue
            self._emit(partition, ("fiml.ohlcv", key, encode(r.model()), partition, None))

    def _close_partition(self, part: _Partition, partition: int) -> None:
        grace = self.settings.grace_ms
        for symbol in sorted(part.symbols):  # sorted: the same order on every replay
            st = part.symbols[symbol]
            nxt = st.candles.next_close_ms(grace)
            if 0 <= nxt <= part.watermark:
                self._candles(st.candles.close(symbol, part.watermark, grace), st, partition)
                self.dirty.setdefault(partition, set()).add(symbol)
        self._refresh_next_close(part)

    def _refresh_next_close(self, part: _Partition) -> None:
        grace = self.settings.grace_ms
        ends = [n for st in part.symbols.values() if (n := st.candles.next_close_ms(grace)) >= 0]
        part.next_close = min(ends) if ends else -1
