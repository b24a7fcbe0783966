"""The seed's keys the processor writes are right, across a UTC midnight: ``change`` against the
open of the day's 1d candle, ``volume`` from the day's trades, ``provider`` nearest the
consensus, ``timestamp`` the event time. Pure: the processor, no broker."""

from __future__ import annotations

import random
from datetime import datetime

import orjson
import pytest

from agents.arbitration.core.processor import Processor
from agents.arbitration.settings import ArbitrationSettings
from agents.arbitration.synthetic import ProviderModel, synthetic_ticks, trade_of
from schemas.codec import decode, encode
from schemas.records import (
    OHLCVUpdate,
    PriceUpdate,
    QuoteUpdate,
    RawTick,
    RawTrade,
    TradeUpdate,
)

DAY = 86_400_000
MIDNIGHT = 1_764_892_800_000  # 2025-12-05T00:00:00Z
START = MIDNIGHT - 60_000  # a minute before it, a minute after


def trades(ticks: list[RawTick]) -> list[RawTrade]:
    rng = random.Random(3)
    return [
        trade_of(t, f"t{i}", round(rng.uniform(0.1, 2.0), 3), seq=i)
        for i, t in enumerate(ticks)
        if i % 7 == 3
    ]


def run() -> tuple[list[tuple[str, bytes]], list[RawTick | RawTrade]]:
    models = [
        ProviderModel("alpha", noise_bps=2, every_ms=500),
        ProviderModel("bravo", noise_bps=4, every_ms=700),
        ProviderModel("charlie", noise_bps=8, every_ms=900),
    ]
    ticks, _ = synthetic_ticks(["BTC/USD"], models, START, 120_000)
    raw: list[RawTick | RawTrade] = [*ticks, *trades(ticks)]
    raw.sort(key=lambda r: (r.event_time_ms, isinstance(r, RawTrade)))
    proc = Processor(ArbitrationSettings())
    for i, r in enumerate(raw):
        proc.process(None, encode(r), 0, i)
    return [(topic, value) for topic, _k, value, _p, _h in proc.drain()], raw


def test_prices_carry_the_seed_keys_with_the_right_values() -> None:
    outputs, raw = run()
    latest: dict[str, float] = {}  # provider -> its latest price, as the processor keeps it
    first_price: dict[int, float] = {}  # day start -> the day's first consensus price
    candle_open: dict[int, float] = {}  # day start -> the open of its published 1d candle
    volume: dict[int, float] = {}  # day start -> volume of the trades applied so far
    raw_iter = iter(raw)  # one price per raw record here, in this order
    checked = 0
    for topic, value in outputs:
        if topic == "fiml.ohlcv" and (candle := decode(OHLCVUpdate, value)).interval == "1d":
            assert candle_open.setdefault(candle.window_start_ms, candle.open) == candle.open
        if topic != "fiml.prices":
            continue
        price = decode(PriceUpdate, value)  # the model's own checks hold
        body = orjson.loads(value)
        record = next(raw_iter)
        latest[record.provider] = record.price
        day = price.event_time_ms - price.event_time_ms % DAY
        assert price.day_open == first_price.setdefault(day, price.price)
        assert body["change"] == price.price - price.day_open
        assert body["change_percent"] == (price.price - price.day_open) / price.day_open * 100
        # a trade's own amount is counted in the candle after its price is made
        assert body["volume"] == (pytest.approx(volume[day]) if day in volume else None)
        if isinstance(record, RawTrade):
            volume[day] = volume.get(day, 0.0) + record.amount
        nearest = min(price.providers_used, key=lambda p: (abs(latest[p] - price.price), p))
        assert price.provider == nearest
        parsed = datetime.fromisoformat(body["timestamp"].replace("Z", "+00:00"))
        assert round(parsed.timestamp() * 1000) == price.event_time_ms
        checked += 1
    assert checked == len(raw)
    assert sorted(first_price) == [MIDNIGHT - DAY, MIDNIGHT]  # both sides of midnight
    assert candle_open == first_price  # change is against the candle a client can read


def test_quotes_trades_and_candles_carry_the_seed_keys() -> None:
    outputs, _ = run()
    seen = set()
    for topic, value in outputs:
        body = orjson.loads(value)
        if topic == "fiml.quotes":
            quote = decode(QuoteUpdate, value)
            assert body["spread"] == quote.ask - quote.bid
        elif topic == "fiml.trades":
            trade = decode(TradeUpdate, value)
            assert body["quantity"] == trade.amount
        elif topic == "fiml.ohlcv":
            candle = decode(OHLCVUpdate, value)
            assert body["is_closed"] is candle.is_final
            start = datetime.fromisoformat(body["timestamp"].replace("Z", "+00:00"))
            assert round(start.timestamp() * 1000) == candle.window_start_ms
        else:
            continue
        assert body["v"] == 2
        seen.add(topic)
    assert seen == {"fiml.quotes", "fiml.trades", "fiml.ohlcv"}
