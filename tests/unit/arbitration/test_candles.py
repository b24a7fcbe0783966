"""Candles against an independent computation, late ticks, empty windows."""

from __future__ import annotations

import random

from agents.arbitration.core.candles import CandleRecord, SymbolCandles
from schemas.records import Interval


def reference(points: list[tuple[int, float]], ms: int) -> dict[int, tuple[float, ...]]:
    """Plain-Python OHLC per window over time-sorted points (stable for equal times)."""
    out: dict[int, list[float]] = {}
    for t, p in sorted(points, key=lambda x: x[0]):
        w = t - t % ms
        if w not in out:
            out[w] = [p, p, p, p]
        else:
            c = out[w]
            c[1], c[2], c[3] = max(c[1], p), min(c[2], p), p
    return {w: tuple(c) for w, c in out.items()}


def finals(records: list[CandleRecord], interval: str) -> dict[int, CandleRecord]:
    got: dict[int, CandleRecord] = {}
    for r in records:
        r.model()  # every record is a valid OHLCVUpdate
        if r.interval == interval and r.is_final:
            assert r.window_start_ms not in got
            got[r.window_start_ms] = r
    return got


def test_matches_independent_computation_with_out_of_order_ticks_inside_grace() -> None:
    rng = random.Random(3)
    t0 = 1_700_000_000_000
    points = [(t0 + i * 137, 100 + rng.gauss(0, 1)) for i in range(2000)]
    shuffled = points[:]
    for i in range(0, len(shuffled) - 5, 5):  # local disorder well inside 2 s of grace
        shuffled[i : i + 5] = rng.sample(shuffled[i : i + 5], 5)
    c = SymbolCandles.new()
    out: list[CandleRecord] = []
    wm = 0
    for t, p in shuffled:
        wm = max(wm, t)
        out += c.close("X", wm, 2000)
        c.on_price(t, p)
        out += c.updates("X", wm, 500)
    out += c.close("X", wm + 10 * 86_400_000, 2000)
    for interval in (Interval.S1, Interval.M1):
        ref = reference(points, interval.ms)
        got = finals(out, interval.value)
        for w, (o, h, low, cl) in ref.items():
            r = got[w]
            assert (r.open, r.high, r.low, r.close) == (o, h, low, cl)
    assert c.late == 0


def test_late_tick_after_grace_is_counted_not_merged() -> None:
    c = SymbolCandles.new((Interval.S1,))
    c.on_price(1_000, 10.0)
    out = c.close("X", 5_000, 2000)  # windows [1000, 2000) .. closed
    c.on_price(1_500, 99.0)  # too late
    assert c.late == 1
    assert all(r.high == 10.0 for r in out)


def test_late_tick_inside_grace_revises() -> None:
    c = SymbolCandles.new((Interval.S1,))
    c.on_price(1_000, 10.0)
    first = c.updates("X", 1_000, 0)
    c.on_price(2_100, 11.0)
    c.on_price(1_900, 12.0)  # late for [1000, 2000) but inside the grace period
    upd = c.updates("X", 2_100, 0)
    final = c.close("X", 4_100, 2000)
    assert first[0].rev == 0 and upd[0].rev == 1 and upd[0].high == 12.0
    assert final[0].is_final and final[0].close == 12.0 and final[0].rev == 2


def test_empty_windows_get_flat_candles() -> None:
    c = SymbolCandles.new((Interval.S1,))
    c.on_price(1_000, 10.0)
    c.on_price(1_500, 11.0)
    c.on_trade(1_600, 2.5)
    out = c.close("X", 7_000, 2000)
    assert [r.window_start_ms for r in out] == [1_000, 2_000, 3_000, 4_000]
    assert out[0].volume == 2.5 and out[0].trade_count == 1
    for r in out[1:]:
        assert (r.open, r.high, r.low, r.close, r.volume) == (11.0,) * 4 + (0.0,)
