from __future__ import annotations

from collections import defaultdict

from hypothesis import given, settings
from hypothesis import strategies as st

from agents.ingest.base import ProviderState
from agents.ingest.simconfig import DEFAULT_SYMBOLS, SimConfig, SimProviderConfig
from agents.ingest.simulator import TRUTH_PROVIDER, SimModel, SimulatorProvider
from schemas.records import ProviderHealth, RawTick, RawTrade


def _run(config: SimConfig, steps: int) -> list[object]:
    model = SimModel(config)
    out: list[object] = []
    for _ in range(steps):
        out.extend(model.step())
    return out


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(min_value=0, max_value=2**32))
def test_same_seed_same_records(seed: int) -> None:
    config = SimConfig(seed=seed)
    assert _run(config, 200) == _run(config, 200)


def test_different_seeds_differ() -> None:
    assert _run(SimConfig(seed=1), 100) != _run(SimConfig(seed=2), 100)


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(min_value=0, max_value=2**32))
def test_sequence_and_event_time_increase_per_provider_and_symbol(seed: int) -> None:
    last_seq: dict[str, int] = {}
    last_time: dict[tuple[str, str], int] = defaultdict(int)
    for event in _run(SimConfig(seed=seed), 400):
        assert isinstance(event, RawTick | RawTrade)
        assert event.seq > last_seq.get(event.provider, -1)
        last_seq[event.provider] = event.seq
        key = (event.provider, event.symbol)
        assert event.event_time_ms >= last_time[key]
        last_time[key] = event.event_time_ms
        assert event.ingest_time_ms >= event.event_time_ms


def test_truth_ticks_are_emitted_every_step_for_every_symbol() -> None:
    events = _run(SimConfig(seed=3), 10)
    truth = [e for e in events if isinstance(e, RawTick) and e.provider == TRUTH_PROVIDER]
    assert len(truth) == 10 * len(DEFAULT_SYMBOLS)


@settings(max_examples=4, deadline=None)
@given(
    seed=st.integers(min_value=0, max_value=2**32),
    outlier_rate=st.sampled_from([0.01, 0.05, 0.2]),
    outage_rate=st.sampled_from([0.002, 0.01]),
    gap_rate=st.sampled_from([0.0, 0.1]),
)
def test_outlier_gap_and_outage_rates_match_configuration(
    seed: int, outlier_rate: float, outage_rate: float, gap_rate: float
) -> None:
    provider = SimProviderConfig(
        "p", tick_interval_ms=50, noise_bps=1.0, outlier_rate=outlier_rate, outlier_bps=500,
        outage_rate=outage_rate, outage_ms=500, gap_rate=gap_rate,
    )  # fmt: skip
    config = SimConfig(symbols=("BTC/USDT", "AAPL"), providers=(provider,), seed=seed)
    model = SimModel(config)
    truth: dict[tuple[str, int], float] = {}
    bad = ticks = 0
    for _ in range(20_000):
        for event in model.step():
            if isinstance(event, RawTick) and event.provider == TRUTH_PROVIDER:
                truth[(event.symbol, event.event_time_ms)] = event.price
            elif isinstance(event, RawTick):
                ticks += 1
                error_bps = abs(event.price / truth[(event.symbol, event.event_time_ms)] - 1) * 1e4
                bad += error_bps > 100  # 100 sigma of noise, a fifth of the outlier size
    stats = model.stats["p"]
    # Measured from the records themselves (prices far from the truth), not from counters.
    assert bad == stats.outliers
    assert abs(bad / ticks - outlier_rate) < 4 * (outlier_rate / ticks) ** 0.5 + 0.002
    started = stats.opportunities - stats.outage_skips
    assert abs(stats.outages / started - outage_rate) < 4 * (outage_rate / started) ** 0.5
    if gap_rate:
        assert abs(stats.gaps / started - gap_rate) < 0.02


def test_volatility_is_ordered_by_asset_type() -> None:
    config = SimConfig(symbols=("BTC/USDT", "AAPL", "EUR/USD"), providers=(), seed=7)
    model = SimModel(config)
    moves: dict[str, float] = defaultdict(float)
    last = dict(model.truth)
    for _ in range(5_000):
        model.step()
        for symbol, price in model.truth.items():
            moves[symbol] += abs(price / last[symbol] - 1)
            last[symbol] = price
    assert moves["BTC/USDT"] > moves["AAPL"] > moves["EUR/USD"]


async def test_provider_emits_exactly_max_ticks() -> None:
    provider = SimulatorProvider(SimConfig(seed=5), speed=0, max_ticks=500)
    events = [e async for e in provider]
    ticks = [e for e in events if isinstance(e, RawTick) and e.provider != TRUTH_PROVIDER]
    assert len(ticks) == 500 == provider.ticks
    health = [e for e in events if isinstance(e, ProviderHealth)]
    assert {h.provider for h in health} >= {"sim-alpha", "sim-beta", "sim-gamma", "sim-delta"}
    assert provider.state is ProviderState.UP


def test_rate_scales_tick_interval() -> None:
    scaled = SimConfig().scaled(2.0)
    assert [p.tick_interval_ms for p in scaled.providers] == [125, 250, 500, 1000]
