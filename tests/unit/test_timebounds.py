"""Event time at the door: the bounds, and ingestion refusing to write what is out of them."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agents.ingest.routing import is_deadletter, prepare
from agents.timebounds import DEFAULT_MAX_AGE_MS, TimeBounds
from schemas.records import AssetType, RawTick, RawTrade

NOW = 1_796_400_000_000
BOUNDS = TimeBounds()


@given(
    offset=st.integers(-10 * 86_400_000, 10 * 86_400_000),
    asset=st.sampled_from(AssetType),
    history=st.booleans(),
)
def test_the_bounds_are_exactly_the_documented_ones(
    offset: int, asset: AssetType, history: bool
) -> None:
    problem = BOUNDS.problem(NOW + offset, NOW, asset.value, history)
    ahead_ok = offset <= 300_000
    old_ok = history or -offset <= DEFAULT_MAX_AGE_MS[asset.value]
    assert (problem is None) == (ahead_ok and old_ok), problem
    if not ahead_ok:
        assert problem is not None and "FIML_MAX_AHEAD_MS" in problem
    elif not old_ok:
        assert problem is not None and "too old for live data" in problem


def tick(event_ms: int, history: bool = False) -> RawTick:
    return RawTick(
        provider="ccxt_binance",
        symbol="BTC/USDT",
        provider_symbol="BTCUSDT",
        asset_type=AssetType.CRYPTO,
        price=65_000.0,
        event_time_ms=event_ms,
        ingest_time_ms=NOW,
        seq=1,
        history=history,
    )


def test_ingestion_dead_letters_what_is_out_of_bounds_and_keeps_declared_history() -> None:
    assert not is_deadletter(prepare(tick(NOW - 1_000)))
    ahead = prepare(tick(NOW + 3_600_000))
    assert is_deadletter(ahead) and ahead.topic.endswith("fiml.deadletter")
    assert b"after its ingest time" in dict(ahead.headers or [])["fiml-error"]
    assert is_deadletter(prepare(tick(NOW - 86_400_000)))  # a day old, said to be live
    assert not is_deadletter(prepare(tick(NOW - 5 * 365 * 86_400_000, history=True)))
    # a recorded trade 2019 is fine as history, refused as live
    trade = RawTrade(
        provider="replay",
        symbol="XRP/ETH",
        provider_symbol="XRP/ETH",
        asset_type=AssetType.CRYPTO,
        trade_id="1",
        price=0.0003,
        amount=1.0,
        event_time_ms=1_570_752_011_000,
        ingest_time_ms=NOW,
        seq=1,
    )
    assert is_deadletter(prepare(trade))
    assert not is_deadletter(prepare(trade.model_copy(update={"history": True})))


def test_bounds_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FIML_MAX_AHEAD_MS", "1000")
    monkeypatch.setenv("FIML_MAX_AGE_MS_CRYPTO", "60000")
    bounds = TimeBounds.from_env()
    assert bounds.max_ahead_ms == 1000 and bounds.max_age_ms["crypto"] == 60_000
    assert bounds.max_age_ms["equity"] == DEFAULT_MAX_AGE_MS["equity"]
