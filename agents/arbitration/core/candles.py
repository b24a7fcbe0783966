"""Candles: tumbling UTC windows in event time, with open updates, finals and a grace period.

Pure logic. One ``SymbolCandles`` per symbol holds a ``CandleSeries`` per interval. Prices come
from the consensus (``on_price``), volume and trade count from de-duplicated trades
(``on_trade``). The caller drives time:

* ``updates(now_ms)`` returns the open candles that changed, at most once per ``throttle_ms`` of
  event time per symbol (``is_final`` false, ``rev`` increasing within the window);
* ``close(watermark_ms)`` returns exactly one final record for every window whose end plus
  ``grace_ms`` the watermark has passed, in window order, with flat candles
  (open = high = low = close = previous close, volume 0) for windows that saw no price.

A price for a window that is already final is *late*: it is counted in ``late`` and dropped,
never merged into another window. Within a window the open is the price with the smallest event
time and the close the one with the largest (ties: the later arrival), so out-of-order ticks
inside the grace period give the same candle as in-order ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from schemas.records import Interval, OHLCVUpdate

__all__ = [
    "DEFAULT_INTERVALS",
    "MAX_FLAT_WINDOWS",
    "Candle",
    "CandleRecord",
    "CandleSeries",
    "SymbolCandles",
]

DEFAULT_INTERVALS: tuple[Interval, ...] = tuple(Interval)
#: Most flat candles one gap gets, per interval: the windows just before the next price (or
#: the watermark). A longer gap is left without candles, so output and memory stay bounded
#: whatever the event times (docs/ARBITRATION.md, "Candles").
MAX_FLAT_WINDOWS = 1_000
_MS = {i: i.ms for i in Interval}  # Interval.ms is a property lookup; this is a dict hit


@dataclass(frozen=True, slots=True)
class CandleRecord:
    """One revision of one window, as ``updates`` and ``close`` return it: the fields of its
    ``OHLCVUpdate``, not checked yet. The processor checks the prices and the volume first
    (a candle that fails is dead-lettered, not written), then builds the record (``model``)."""

    symbol: str
    interval: Interval
    window_start_ms: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    trade_count: int
    rev: int
    is_final: bool
    event_time_ms: int  # the time of the window's last price (its start for a flat candle)

    @property
    def window_end_ms(self) -> int:
        return self.window_start_ms + _MS[self.interval]

    def model(self) -> OHLCVUpdate:
        """The ``fiml.ohlcv`` record (the seed's keys derived by the model).

        Raises:
            pydantic.ValidationError: the candle breaks ``OHLCVUpdate``'s rules.
        """
        return OHLCVUpdate(
            symbol=self.symbol,
            interval=self.interval,
            window_start_ms=self.window_start_ms,
            window_end_ms=self.window_end_ms,
            open=self.open,
            high=self.high,
            low=self.low,
            close=self.close,
            volume=self.volume,
            trade_count=self.trade_count,
            rev=self.rev,
            is_final=self.is_final,
            event_time_ms=self.event_time_ms,
        )


@dataclass(slots=True)
class Candle:
    start: int
    open: float
    high: float
    low: float
    close: float
    first_ms: int
    last_ms: int
    volume: float = 0.0
    trades: int = 0
    rev: int = 0  # how many records of this window were emitted so far
    dirty: bool = True

    def add_price(self, time_ms: int, price: float) -> None:
        if time_ms < self.first_ms:
            self.open, self.first_ms = price, time_ms
        if time_ms >= self.last_ms:
            self.close, self.last_ms = price, time_ms
        self.high = max(self.high, price)
        self.low = min(self.low, price)
        self.dirty = True

    def to_list(self) -> list[float | int | bool]:
        return [
            self.start,
            self.open,
            self.high,
            self.low,
            self.close,
            self.first_ms,
            self.last_ms,
            self.volume,
            self.trades,
            self.rev,
            self.dirty,
        ]

    @classmethod
    def from_list(cls, d: list[float | int | bool]) -> Candle:
        return cls(
            int(d[0]),
            float(d[1]),
            float(d[2]),
            float(d[3]),
            float(d[4]),
            int(d[5]),
            int(d[6]),
            float(d[7]),
            int(d[8]),
            int(d[9]),
            bool(d[10]),
        )


@dataclass(slots=True)
class CandleSeries:
    """The windows of one interval for one symbol that are not final yet."""

    interval: Interval
    windows: dict[int, Candle] = field(default_factory=dict)
    closed_until: int = -1  # start of the first window not yet final; -1: no price yet
    last_close: float = 0.0
    late: int = 0
    #: Empty windows skipped without a flat candle (gaps longer than ``MAX_FLAT_WINDOWS``);
    #: not saved (a count for the metrics, like ``late``'s use in logs).
    gap_windows: int = field(default=0, compare=False)
    # the interval's length, derived (not saved): read for six series on every tick
    ms: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.ms = _MS[self.interval]

    def _window(self, time_ms: int, price: float | None) -> Candle | None:
        start = time_ms - time_ms % self.ms
        if self.closed_until >= 0 and start < self.closed_until:
            self.late += 1
            return None
        candle = self.windows.get(start)
        if candle is None:
            if price is None:  # volume before any price: open the window at the last close
                if self.closed_until < 0:
                    self.late += 1
                    return None
                price = self.last_close
                if price <= 0.0 and self.windows:  # nothing closed yet: the newest open close
                    price = self.windows[max(self.windows)].close
                if price <= 0.0:  # no price known at all: the volume has no candle to go to
                    self.late += 1
                    return None
            candle = Candle(start, price, price, price, price, time_ms, time_ms)
            self.windows[start] = candle
            if self.closed_until < 0:
                self.closed_until = start
        return candle

    def on_price(self, time_ms: int, price: float) -> None:
        candle = self._window(time_ms, price)
        if candle is not None:
            candle.add_price(time_ms, price)

    def on_trade(self, time_ms: int, amount: float) -> None:
        candle = self._window(time_ms, None)
        if candle is not None:
            candle.volume += amount
            candle.trades += 1
            candle.dirty = True

    def close(
        self, symbol: str, watermark_ms: int, grace_ms: int, max_flat: int = MAX_FLAT_WINDOWS
    ) -> list[CandleRecord]:
        out: list[CandleRecord] = []
        step = self.ms
        if self.closed_until < 0:
            return out
        # the first window start that the watermark cannot close yet
        closable_end = (watermark_ms - grace_ms - step) // step * step + step
        while self.closed_until + step + grace_ms <= watermark_ms:
            start = self.closed_until
            candle = self.windows.pop(start, None)
            if candle is None:  # no price in this window: a flat candle, as exchanges do
                # ... but at most ``max_flat`` of them before the next window with a price
                # (or the watermark): a symbol quiet for years, or one whose first tick is
                # years older than its partition's watermark, must not fill every second.
                end = min((s for s in self.windows if s > start), default=closable_end)
                empty = (min(end, closable_end) - start) // step
                if empty > max_flat:
                    self.gap_windows += empty - max_flat
                    self.closed_until = start + (empty - max_flat) * step
                    continue
                p = self.last_close
                candle = Candle(start, p, p, p, p, start, start)
            out.append(_record(symbol, self.interval, candle, final=True))
            self.last_close = candle.close
            self.closed_until = start + step
        return out

    def to_list(self) -> list[object]:
        return [
            self.interval.value,
            [c.to_list() for c in self.windows.values()],
            self.closed_until,
            self.last_close,
            self.late,
        ]

    @classmethod
    def from_list(cls, d: list[object]) -> CandleSeries:
        interval, windows, closed, last_close, late = d
        series = cls(Interval(str(interval)))
        for w in windows:  # type: ignore[attr-defined]
            candle = Candle.from_list(w)
            series.windows[candle.start] = candle
        series.closed_until, series.last_close = int(closed), float(last_close)  # type: ignore[call-overload, arg-type]
        series.late = int(late)  # type: ignore[call-overload]
        return series


def _record(symbol: str, interval: Interval, c: Candle, final: bool) -> CandleRecord:
    rev = c.rev
    c.rev += 1
    c.dirty = False
    return CandleRecord(
        symbol,
        interval,
        c.start,
        c.open,
        c.high,
        c.low,
        c.close,
        c.volume,
        c.trades,
        rev,
        final,
        c.last_ms,
    )


@dataclass(slots=True)
class SymbolCandles:
    """Every interval's candles of one symbol, with the update throttle."""

    series: list[CandleSeries]
    last_update_ms: int = -1
    started: bool = False  # every series has had a price (not saved: recomputed on load)

    @classmethod
    def new(cls, intervals: tuple[Interval, ...] = DEFAULT_INTERVALS) -> SymbolCandles:
        return cls([CandleSeries(i) for i in intervals])

    def on_price(self, time_ms: int, price: float) -> None:
        # The hot path (every tick, six intervals): the window exists almost always, so update
        # it inline; anything else (a new window, a late price) goes the long way.
        for s in self.series:
            c = s.windows.get(time_ms - time_ms % s.ms)
            if c is None:
                s.on_price(time_ms, price)
                continue
            if time_ms < c.first_ms:
                c.open, c.first_ms = price, time_ms
            if time_ms >= c.last_ms:
                c.close, c.last_ms = price, time_ms
            if price > c.high:
                c.high = price
            if price < c.low:
                c.low = price
            c.dirty = True

    def on_trade(self, time_ms: int, amount: float) -> None:
        for s in self.series:
            s.on_trade(time_ms, amount)

    def updates(self, symbol: str, now_ms: int, throttle_ms: int) -> list[CandleRecord]:
        """Open candles changed since their last record, at most once per ``throttle_ms``."""
        if self.last_update_ms >= 0 and now_ms - self.last_update_ms < throttle_ms:
            return []
        self.last_update_ms = now_ms
        return [
            _record(symbol, s.interval, c, final=False)
            for s in self.series
            for c in sorted(s.windows.values(), key=_start)
            if c.dirty
        ]

    def close(self, symbol: str, watermark_ms: int, grace_ms: int) -> list[CandleRecord]:
        return [r for s in self.series for r in s.close(symbol, watermark_ms, grace_ms)]

    def day(self, time_ms: int) -> Candle | None:
        """The open 1d candle whose UTC day contains ``time_ms`` (None if there is none): the
        reference of a price's ``change`` and ``volume``."""
        for s in reversed(self.series):  # 1d is the last of the default intervals
            if s.interval is Interval.D1:
                return s.windows.get(time_ms - time_ms % s.ms)
        return None

    def next_close_ms(self, grace_ms: int) -> int:
        """The watermark at which ``close`` will next return something (-1: never yet)."""
        ends = [s.closed_until + s.ms + grace_ms for s in self.series if s.closed_until >= 0]
        return min(ends) if ends else -1

    @property
    def late(self) -> int:
        return self.series[0].late if self.series else 0

    def to_list(self) -> list[object]:
        return [[s.to_list() for s in self.series], self.last_update_ms]

    @classmethod
    def from_list(cls, d: list[object]) -> SymbolCandles:
        series, last = d
        return cls([CandleSeries.from_list(s) for s in series], int(last))  # type: ignore[attr-defined, call-overload]


def _start(c: Candle) -> int:
    return c.start
