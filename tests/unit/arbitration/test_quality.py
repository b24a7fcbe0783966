"""Issue 16: the quality harness (agents/arbitration/quality.py) measures what it says (the
bound, coverage and calibration against hand computations, every scenario present and
deterministic, synthetic_ticks unchanged for callers that set none of the new fields), and the
consensus meets the issue's targets in every scenario (fixed seeds, the full 300 s each)."""

from __future__ import annotations

import dataclasses
import hashlib
import math

import pytest

from agents.arbitration import quality
from agents.arbitration.core.processor import Processor
from agents.arbitration.quality import (
    PricePoint,
    Scenario,
    bound_bps,
    calibration,
    coverage,
    evaluate,
    format_report,
    is_hit,
    scenarios,
)
from agents.arbitration.settings import ArbitrationSettings
from agents.arbitration.synthetic import ProviderModel, synthetic_ticks
from schemas.codec import encode
from schemas.records import RawTick

START = 1_700_000_000_000
SHORT = 20_000  # ms: enough prices for the tests, fast


def digest(models: list[ProviderModel], seed: int = 7) -> str:
    ticks, truth = synthetic_ticks(["BTC/USD", "ETH/USD"], models, START, 30_000, seed=seed)
    h = hashlib.sha256()
    for t in ticks:
        h.update(
            repr(
                (
                    t.provider,
                    t.symbol,
                    t.price,
                    t.bid,
                    t.ask,
                    t.event_time_ms,
                    t.ingest_time_ms,
                    t.seq,
                )
            ).encode()
        )
    for symbol, path in sorted(truth.items()):
        h.update(repr((symbol, path)).encode())
    return h.hexdigest()


# Produced by the code before the fields of issue 16 were added (git 2c45b29): callers that set
# none of them must get exactly the same ticks, byte for byte.
PINNED = {
    "defaults": "80d29eb5a85084c0bfbb91dfb8a861c332249795c88c38f249acd4213575f41b",
    "mixed": "a8dccde8177403ed051b6b05942044fcff70f4a0832abbae3cd27f9ac913ab3c",
}


def test_synthetic_ticks_unchanged_for_the_old_fields() -> None:
    assert (
        digest([ProviderModel("a"), ProviderModel("b", noise_bps=2, every_ms=700)])
        == PINNED["defaults"]
    )
    mixed = [
        ProviderModel("a", noise_bps=1, every_ms=250, lag_ms=300, bad_print_rate=0.1),
        ProviderModel("b", every_ms=600, dark_from_ms=5_000, dark_until_ms=12_000),
        ProviderModel("c", noise_bps=8, every_ms=1_100, dark_from_ms=20_000),
    ]
    assert digest(mixed, seed=3) == PINNED["mixed"]


def test_new_fields_do_what_they_say() -> None:
    frozen = ProviderModel("f", every_ms=500, frozen_from_ms=10_000)
    src = ProviderModel("s", noise_bps=5, every_ms=500)
    copy = ProviderModel("c", noise_bps=0.0, every_ms=500, copy_of="s")
    late = ProviderModel("d", every_ms=500, delay_ms=1_500)
    ticks, truth = synthetic_ticks(["X/USD"], [frozen, src, copy, late], START, 30_000)
    after = {t.price for t in ticks if t.provider == "f" and t.event_time_ms >= START + 10_000}
    assert len(after) == 1
    path = dict(truth["X/USD"])

    def rel(t: RawTick) -> float:
        return t.price / path[START + (t.event_time_ms - START) // 100 * 100] - 1

    src_err = {t.event_time_ms: rel(t) for t in ticks if t.provider == "s"}
    copied = [t for t in ticks if t.provider == "c"]
    for t in copied[2:]:
        latest = max(k for k in src_err if k <= t.event_time_ms)
        assert rel(t) == pytest.approx(src_err[latest], abs=1e-12)
    assert all(t.ingest_time_ms == t.event_time_ms + 1_500 for t in ticks if t.provider == "d")
    assert [t.ingest_time_ms for t in ticks] == sorted(t.ingest_time_ms for t in ticks)


def test_bound_matches_a_hand_computation() -> None:
    # medians 1 and 2 bp: sigmas 1/z and 2/z; combined 1/sqrt(z^2 + z^2/4) = 2/(z sqrt 5);
    # its median |error| is z x that = 2 / sqrt(5) = 0.8944 bp
    assert bound_bps([1.0, 2.0]) == pytest.approx(2 / math.sqrt(5))
    assert bound_bps([3.0]) == pytest.approx(3.0)  # one provider: itself
    assert bound_bps([2.0, 2.0, 2.0, 2.0]) == pytest.approx(1.0)  # n equal: / sqrt(n)
    assert bound_bps([0.0, 5.0]) == 0.0
    assert math.isnan(bound_bps([]))
    # the issue's demo figures: 1.0 / 2.1 / 9.8 / 4.8 bp -> about 0.88 x the best
    assert bound_bps([1.0, 2.1, 9.8, 4.8]) == pytest.approx(0.8837, abs=1e-3)


def pt(price: float, truth: float, confidence: float, lo: float, hi: float) -> PricePoint:
    return PricePoint("X", 0, price, lo, hi, confidence, truth)


def test_coverage_and_calibration_on_hand_made_prices() -> None:
    points = [
        pt(100.0, 100.01, 0.05, 99.99, 100.02),  # 1 bp off: hit, covered
        pt(100.0, 100.03, 0.08, 99.99, 100.02),  # 3 bp off: miss, not covered
        pt(100.0, 100.0, 0.95, 100.0, 100.0),  # exact: hit, covered (edges included)
        pt(100.0, 99.985, 1.0, 99.99, 100.01),  # 1.5 bp off: hit, not covered
    ]
    assert coverage(points) == 0.5
    assert math.isnan(coverage([]))
    assert is_hit(100.0, 99.985) and not is_hit(100.0, 99.98)  # 99.98: 2.0004 bp
    buckets = calibration(points)
    assert [b.low for b in buckets] == pytest.approx([i / 10 for i in range(10)])
    assert [b.count for b in buckets] == [2, 0, 0, 0, 0, 0, 0, 0, 0, 2]
    assert buckets[0].hit_rate == 0.5 and buckets[0].mean_confidence == pytest.approx(0.065)
    assert buckets[9].hit_rate == 1.0 and buckets[9].mean_confidence == pytest.approx(0.975)
    assert math.isnan(buckets[5].hit_rate)
    assert calibration(points, hit_bps=0.5)[0].hit_rate == 0.0


def test_one_perfect_provider_has_no_error_alone() -> None:
    perfect = ProviderModel("perfect", noise_bps=0.0, every_ms=100)
    noisy = ProviderModel("noisy", noise_bps=10.0, every_ms=500)
    report = evaluate(Scenario("perfect", "", (perfect, noisy), ("X/USD",), SHORT))
    assert report.best_provider == "perfect"
    assert report.best_bps < 1e-6 and report.bound == 0.0
    assert report.providers_bps["noisy"] > 3.0
    assert report.prices > 100


def test_every_scenario_of_the_issue_is_there_and_deterministic() -> None:
    got = scenarios(SHORT)
    assert [s.name for s in got] == [
        "demo",
        "dark",
        "bad-prints",
        "frozen",
        "lagging",
        "all-but-one-stale",
        "copies",
        "degrades",
    ]
    assert [s.name for s in scenarios(SHORT)] == [s.name for s in got]
    assert scenarios(SHORT) == got
    for s in got:
        first, second = evaluate(s), evaluate(dataclasses.replace(s))
        assert repr(first) == repr(second), s.name
        assert first.prices > 0 and 0.0 <= first.coverage <= 1.0, s.name
        assert sum(b.count for b in first.buckets) == first.prices
        assert set(first.providers_bps) == {p.name for p in s.providers}
        assert format_report(first).startswith(s.name)
    assert quality.demo_providers()[0].name == "sim-alpha"


# -- the targets of issue 16 -----------------------------------------------------------------

#: The band's stated coverage and how far from it a scenario may be (issue 16: 3 points).
COVERAGE, COVERAGE_SLACK = 0.90, 0.03
#: Calibration: the expected calibration error (the mean |hit rate - confidence| over the
#: prices) and the largest gap in any bucket holding at least 5 % of the prices.
MAX_ECE, MAX_BUCKET_GAP = 0.05, 0.11


@pytest.fixture(scope="module")
def reports() -> dict[str, quality.Report]:
    return {s.name: evaluate(s) for s in scenarios()}


def targets_met(r: quality.Report) -> list[str]:
    """What ``r`` misses of the issue's targets (empty: all met)."""
    missed = []
    if not r.consensus_bps <= 1.1 * r.bound:
        missed.append(f"{r.consensus_bps:.3f} bp is over 1.1x the bound {r.bound:.3f}")
    if not r.consensus_bps < r.best_bps:
        missed.append(f"{r.consensus_bps:.3f} bp is not better than {r.best_provider}'s")
    if not abs(r.coverage - COVERAGE) <= COVERAGE_SLACK:
        missed.append(f"coverage {r.coverage:.3f}")
    big = [b for b in r.buckets if b.count >= 0.05 * r.prices]
    ece = sum(b.count * abs(b.hit_rate - b.mean_confidence) for b in r.buckets if b.count)
    if not ece / r.prices <= MAX_ECE:
        missed.append(f"expected calibration error {ece / r.prices:.3f}")
    gaps = [abs(b.hit_rate - b.mean_confidence) for b in big]
    if not max(gaps) <= MAX_BUCKET_GAP:
        missed.append(f"a bucket off by {max(gaps):.3f}")
    # the hit rate rises with the confidence: the most confident bucket beats the least
    if not big[-1].hit_rate > big[0].hit_rate:
        missed.append("the hit rate does not rise with the confidence")
    return missed


@pytest.mark.parametrize("name", [s.name for s in scenarios(SHORT)])
def test_the_consensus_meets_the_targets(reports: dict[str, quality.Report], name: str) -> None:
    assert targets_met(reports[name]) == []


def test_the_targets_catch_a_consensus_that_misses_them(reports: dict[str, quality.Report]) -> None:
    """The check above can fail: the same report with a band half as wide or a price 10 %
    worse misses, as ``lagging`` did before hidden lags were learned (82 % coverage)."""
    r = reports["demo"]
    assert targets_met(dataclasses.replace(r, coverage=0.82)) != []
    assert targets_met(dataclasses.replace(r, consensus_bps=1.1 * r.best_bps)) != []


def test_a_degraded_provider_loses_its_weight_within_20_of_its_ticks() -> None:
    """degrades: sim-alpha's noise goes from 1.5 to 15 bp half-way; counting its ticks from
    then, its learned variance passes sim-beta's (3 bp) within 20 (5 s at 4 a second)."""
    s = next(s for s in scenarios() if s.name == "degrades")
    ticks, _ = synthetic_ticks(
        list(s.symbols), list(s.providers), s.start_ms, s.duration_ms, s.seed, s.step_vol
    )
    proc = Processor(ArbitrationSettings())
    half = s.start_ms + s.duration_ms // 2
    ticks_after: dict[str, int] = {}
    followed: dict[str, int] = {}
    for offset, tick in enumerate(ticks):
        proc.process(None, encode(tick), 0, offset)
        if tick.provider == "sim-alpha" and tick.event_time_ms >= half:
            n = ticks_after[tick.symbol] = ticks_after.get(tick.symbol, 0) + 1
            learned = proc.symbol_state(0, tick.symbol).stats
            if tick.symbol not in followed and (
                learned["sim-alpha"].noise_var > learned["sim-beta"].noise_var
            ):
                followed[tick.symbol] = n
    assert set(followed) == set(s.symbols)
    assert max(followed.values()) <= 20


# -- a bad day: providers that lie ----------------------------------------------------------


def liars(n: int, copies: bool) -> Scenario:
    """The demo's four honest providers and ``n`` precise ones 40 bp off: independent liars,
    or one lying source and its copies (a Sybil attack)."""
    lie = ProviderModel("liar-0", noise_bps=1.0, every_ms=300, bias_bps=40.0)
    more = [
        ProviderModel(
            f"liar-{i}",
            noise_bps=0.3 if copies else 1.0,
            every_ms=300 + 37 * i,
            bias_bps=40.0,
            copy_of="liar-0" if copies else None,
        )
        for i in range(1, n)
    ]
    return Scenario(f"liars-{n}", "", (*quality.demo_providers(), lie, *more))


@pytest.mark.parametrize(("n", "copies"), [(1, False), (3, False), (4, True), (6, True)])
def test_liars_in_a_minority_of_sources_do_not_move_the_price(n: int, copies: bool) -> None:
    """Found by attacking the consensus: six copies of a source 40 bp off outvoted the four
    honest providers in the median (27 bp off the truth), and a provider that is consistently
    wrong learned a wide error and widened its own exclusion limit until it was never
    excluded. Copies now count one vote in the median too, and the limits scale with each
    provider's white noise only. Copies hold the price until they are found out (20 quotes
    of each, about 6 s here), so their first 30 s are left out. (Independent liars as many as
    the honest ones are a tie that no median can break: docs/ARBITRATION.md.)"""
    r = evaluate(liars(n, copies), skip_ms=30_000 if copies else 0)
    assert r.best_provider.startswith("sim-")
    assert r.consensus_bps < r.best_bps
    assert abs(r.coverage - COVERAGE) <= COVERAGE_SLACK
