"""Liveness (gateway/liveness.py): a symbol goes stale within twice its learned interval of
silence, recovers, and is live again; a quiet pause does not teach a slow interval; provider
states are changes too."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gateway.liveness import RECOVERED_AFTER, Liveness, Status


def feed(live: Liveness, symbol: str, times: list[float]) -> list[Status]:
    changes = []
    for t in times:
        change = live.on_price(symbol, int(t * 1000), t)
        if change is not None:
            changes.append(change.state.status)
    return changes


def test_a_new_symbol_recovers_into_live_then_goes_stale_after_twice_its_interval() -> None:
    live = Liveness(min_interval_s=0.1)
    assert live.get("BTC/USDT").status is Status.STALE  # nothing known yet
    changes = feed(live, "BTC/USDT", [0.5 * i for i in range(20)])  # every 0.5 s
    assert changes == [Status.RECOVERING, Status.LIVE]
    s = live.get("BTC/USDT")
    assert abs(s.interval_s - 0.5) < 1e-9 and s.last_event_ms == 9_500
    assert live.tick(9.5 + 0.99) == []  # within twice the interval
    stale = live.tick(9.5 + 1.01)
    assert [c.state.status for c in stale] == [Status.STALE]
    assert live.tick(20.0) == []  # said once


def test_after_stale_it_recovers_and_is_live_after_enough_prices_on_time() -> None:
    live = Liveness(min_interval_s=0.1)
    feed(live, "ETH/USDT", [float(i) for i in range(10)])
    live.tick(100.0)
    assert live.get("ETH/USDT").status is Status.STALE
    changes = feed(live, "ETH/USDT", [100.0 + i for i in range(RECOVERED_AFTER)])
    assert changes == [Status.RECOVERING, Status.LIVE]
    # the pause did not teach a 90 s interval
    assert live.get("ETH/USDT").interval_s < 1.5


@given(st.lists(st.floats(0.01, 30.0), min_size=2, max_size=60), st.floats(0.05, 2.0))
def test_stale_is_detected_within_twice_the_interval_and_never_before(
    gaps: list[float], floor: float
) -> None:
    live = Liveness(min_interval_s=floor)
    t = 0.0
    for gap in gaps:
        t += gap
        live.on_price("X", int(t * 1000), t)
    s = live.get("X")
    bound = 2 * max(s.interval_s, floor)
    if s.status is not Status.STALE:
        assert live.tick(t + bound * 0.999) == []
        assert [c.symbol for c in live.tick(t + bound * 1.001)] == ["X"]


def test_a_provider_state_change_is_a_change_once() -> None:
    live = Liveness()
    first = live.on_health("BTC/USDT", "sim-alpha", "up", 0.0)
    assert first is not None and first.state.providers == {"sim-alpha": "up"}
    assert live.on_health("BTC/USDT", "sim-alpha", "up", 1.0) is None
    down = live.on_health("BTC/USDT", "sim-alpha", "down", 2.0)
    assert down is not None and down.state.providers["sim-alpha"] == "down"
