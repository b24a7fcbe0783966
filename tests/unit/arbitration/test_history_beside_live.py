"""Recorded history beside live data must not flood the worker: a symbol whose first tick is
years older than its partition's watermark (``fiml ingest -p replay:<2019 trades>`` beside the
demo) used to get a flat candle for every second since 2019 (6.6 to 14.8 GB, then no price
reached any client). Gap filling is now bounded. Pure: the processor, no broker."""

from __future__ import annotations

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.arbitration.core.candles import MAX_FLAT_WINDOWS
from agents.arbitration.core.processor import Processor
from agents.arbitration.settings import ArbitrationSettings
from schemas.codec import encode
from schemas.records import AssetType, Interval, RawTick

NOW = 1_796_400_000_000  # 2026-12-04
YEAR = 365 * 86_400_000


def tick(
    symbol: str, t: int, price: float, seq: int, provider: str = "sim-a", history: bool = False
) -> bytes:
    return encode(
        RawTick(
            provider=provider,
            symbol=symbol,
            provider_symbol=symbol,
            asset_type=AssetType.CRYPTO,
            price=price,
            event_time_ms=t,
            ingest_time_ms=max(t, NOW),
            seq=seq,
            history=history,
        )
    )


@settings(deadline=None, max_examples=25)
@given(age_ms=st.integers(10 * 60_000, 8 * YEAR))
def test_an_old_first_tick_beside_live_data_gives_bounded_candles(age_ms: int) -> None:
    proc = Processor(ArbitrationSettings())
    offset = 0

    def feed(value: bytes) -> None:
        nonlocal offset
        proc.process(None, value, 0, offset)
        offset += 1

    for i in range(30):  # live BTC, one tick a second
        feed(tick("BTC/USDT", NOW + i * 1000, 65_000.0 + i, i))
    # history's first tick, declared as history (the replay provider does): past the age bound
    feed(tick("XRP/ETH", NOW - age_ms, 0.0003, 100, provider="replay", history=True))
    for i in range(30, 60):  # live goes on
        feed(tick("BTC/USDT", NOW + i * 1000, 65_000.0 + i, i))
    out = [orjson.loads(v) for topic, _k, v, _p, _h in proc.drain() if topic == "fiml.ohlcv"]
    xrp = [c for c in out if c["symbol"] == "XRP/ETH"]
    for interval in Interval:
        finals = [c for c in xrp if c["interval"] == interval.value and c["is_final"]]
        # the window with the tick, at most MAX_FLAT_WINDOWS flat ones for the gap, then one a
        # window as the live watermark moves on (30 s): a quiet symbol's candles still close
        assert len(finals) <= 1 + MAX_FLAT_WINDOWS + 30_000 // interval.ms + 1, interval
    # live data is untouched: BTC's 1s candles are all there, one final per second
    btc = [c for c in out if c["symbol"] == "BTC/USDT" and c["interval"] == "1s" and c["is_final"]]
    assert [c["window_start_ms"] for c in btc] == [NOW + i * 1000 for i in range(len(btc))]
    assert len(btc) >= 55


def test_undeclared_old_and_future_ticks_are_dead_lettered_with_the_reason() -> None:
    proc = Processor(ArbitrationSettings())
    proc.process(None, tick("BTC/USDT", NOW, 65_000.0, 0), 0, 0)
    old = encode(
        RawTick(
            provider="sim-a",
            symbol="ETH/USDT",
            provider_symbol="ETHUSDT",
            asset_type=AssetType.CRYPTO,
            price=3000.0,
            event_time_ms=NOW - 2 * 3_600_000,
            ingest_time_ms=NOW,
            seq=1,
        )
    )
    ahead = encode(
        RawTick(
            provider="sim-a",
            symbol="ETH/USDT",
            provider_symbol="ETHUSDT",
            asset_type=AssetType.CRYPTO,
            price=3000.0,
            event_time_ms=NOW + 3_600_000,
            ingest_time_ms=NOW,
            seq=2,
        )
    )
    proc.process(None, old, 0, 1)
    proc.process(None, ahead, 0, 2)
    dead = [
        (v, dict(h or [])) for topic, _k, v, _p, h in proc.drain() if topic == "fiml.deadletter"
    ]
    assert [v for v, _ in dead] == [old, ahead]
    assert b"too old for live data" in dead[0][1]["fiml-error"]
    assert b"after its ingest time" in dead[1][1]["fiml-error"]
    assert dead[0][1]["fiml-offset"] == b"1" and proc.out_of_time == 2
    # neither moved anything: the partition still knows only BTC/USDT
    assert proc.late_ticks() == 0
