"""Hidden lags (agents/arbitration/core/lags.py): the V fit finds its bottom, the learner finds a
provider's lag on a random walk and none for an honest one, starts again after a silence, stays
finite on absurd prices and saves; through the worker's processor, the `lagging` scenario's
lag is learned and the honest providers get none."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agents.arbitration.core.lags import (
    CANDIDATES_MS,
    FIT_STEP_MS,
    MAX_LAG_MS,
    LagLearner,
    fit_lag,
)
from agents.arbitration.core.processor import Processor
from agents.arbitration.core.state import SymbolState
from agents.arbitration.quality import scenarios
from agents.arbitration.settings import ArbitrationSettings
from agents.arbitration.synthetic import synthetic_ticks
from schemas.codec import encode

DRIFT = 0.0015  # bp² per ms: the quality scenarios' crypto volatility


@given(
    st.integers(4, MAX_LAG_MS // FIT_STEP_MS).map(lambda k: k * FIT_STEP_MS),
    st.floats(0.0005, 0.01),
    st.floats(0.0, 200.0),
)
def test_the_fit_finds_the_bottom_of_an_exact_v(lag: int, drift: float, level: float) -> None:
    fits = [level + drift * abs(c - lag) for c in CANDIDATES_MS]
    assert fit_lag(fits, drift) == lag


@pytest.mark.parametrize("lag", [0, 100, 200, 300])
def test_lags_under_the_grids_resolution_count_as_none(lag: int) -> None:
    """Between the candidates (0.5 s apart) the curve is read by interpolation, which cannot
    show a drop for a bottom under 0.4 s: such lags are taken as none (docs/ARBITRATION.md)."""
    fits = [10.0 + DRIFT * abs(c - lag) for c in CANDIDATES_MS]
    assert fit_lag(fits, DRIFT) == 0


def test_a_curve_that_does_not_drop_enough_gives_no_lag() -> None:
    rising = [5.0 + DRIFT * c for c in CANDIDATES_MS]  # honest: best at 0
    assert fit_lag(rising, DRIFT) == 0
    flat = [5.0] * len(CANDIDATES_MS)
    assert fit_lag(flat, DRIFT) == 0
    # a V at 3 s, but only a tenth as deep as a real lag's (noise, not a lag)
    shallow = [5.0 + 0.1 * DRIFT * abs(c - 3_000) for c in CANDIDATES_MS]
    assert fit_lag(shallow, DRIFT) == 0


def walk(seed: int, ms: int) -> list[float]:
    """A random walk in steps of 10 ms with variance DRIFT bp² per ms, from 100."""
    rng = random.Random(seed)
    step = math.sqrt(DRIFT * 10) / 1e4
    price, path = 100.0, []
    for _ in range(ms // 10 + 1):
        path.append(price)
        price *= 1 + rng.gauss(0, step)
    return path


def learn(lag_ms: int, seed: int, ms: int = 240_000, gap_from: int = -1) -> tuple[LagLearner, int]:
    """A provider ticking every 250 ms with 1.5 bp of noise that shows the truth of ``lag_ms``
    ago, against others whose estimate is 3 bp off and 400 ms old; optionally silent for 20 s
    from ``gap_from``. Returns the learner and the last lag it fitted."""
    truth = walk(seed, ms)
    rng = random.Random(seed + 1)
    learner, learned = LagLearner(), 0
    for t in range(10_000, ms, 250):
        if gap_from <= t < gap_from + 20_000:
            continue
        quoted = truth[(t - lag_ms) // 10] * (1 + rng.gauss(0, 1.5e-4))
        others = truth[(t - 400) // 10] * (1 + rng.gauss(0, 3e-4))
        got = learner.observe(t, quoted, others, t - 400, DRIFT)
        if got is not None:
            learned = got
    return learner, learned


@pytest.mark.parametrize("lag", [1_500, 3_000, 4_500])
@pytest.mark.parametrize("seed", [1, 2])
def test_a_lagging_provider_is_found_out(lag: int, seed: int) -> None:
    _, learned = learn(lag, seed)
    assert abs(learned - lag) <= 500


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_an_honest_provider_gets_no_lag(seed: int) -> None:
    _, learned = learn(0, seed)
    assert learned <= 300  # at most the others' age blurs the bottom


def test_after_a_silence_the_histories_start_again() -> None:
    """A reference from before a 20 s silence is never compared with quotes after it (the
    interpolation across the gap would be a straight line through 20 s of market)."""
    learner, learned = learn(3_000, 1, ms=120_000, gap_from=60_000)
    assert abs(learned - 3_000) <= 500
    assert learner.own_times[-1] - learner.own_times[0] <= MAX_LAG_MS + 500
    gap = LagLearner()
    gap.observe(0, 100.0, 100.0, 0, DRIFT)
    gap.observe(30_000, 200.0, 200.0, 30_000, DRIFT)
    assert (gap.own_times, gap.ref_times, gap.samples) == ([30_000], [30_000.0], 0)


def test_absurd_prices_leave_the_fits_finite_and_the_state_saves() -> None:
    learner = LagLearner()
    for i in range(200):
        t = 250 * i
        price = 1e300 if i % 7 == 3 else 100.0
        learner.observe(t, price, 1e-300 if i % 11 == 5 else 100.0, t, DRIFT)
    assert learner.samples > 0 and all(math.isfinite(f) for f in learner.fits)
    state = SymbolState("BTC/USD", "crypto", 0, lags={"a": learner})
    assert SymbolState.from_bytes(state.to_bytes()).lags == {"a": learner}


def test_a_saved_learner_with_other_candidates_is_refused() -> None:
    learner, _ = learn(1_500, 1, ms=30_000)
    saved = learner.to_list()
    assert LagLearner.from_list(saved) == learner
    saved[4] = [1.0, 2.0]
    with pytest.raises(ValueError, match="13 numbers"):
        LagLearner.from_list(saved)


@pytest.fixture(scope="module")
def lagging_states() -> dict[str, SymbolState]:
    s = next(s for s in scenarios() if s.name == "lagging")
    ticks, _ = synthetic_ticks(
        list(s.symbols), list(s.providers), s.start_ms, s.duration_ms, s.seed, s.step_vol
    )
    proc = Processor(ArbitrationSettings())
    for offset, tick in enumerate(ticks):
        proc.process(None, encode(tick), 0, offset)
    return {symbol: proc.symbol_state(0, symbol) for symbol in s.symbols}


def test_the_worker_learns_the_lagging_scenarios_lag(
    lagging_states: dict[str, SymbolState],
) -> None:
    """sim-alpha shows the truth of 3 s ago; sim-beta (3 bp, every 500 ms) is honest."""
    for symbol, state in lagging_states.items():
        assert 2_500 <= state.stats["sim-alpha"].info_lag_ms <= 3_500, symbol
        assert state.stats["sim-beta"].info_lag_ms == 0, symbol
