"""Consensus on hand-built cases and hypothesis properties (the model: consensus.py)."""

from __future__ import annotations

import itertools
import math

from hypothesis import given
from hypothesis import strategies as st

from agents.arbitration.core.consensus import (
    Z_90,
    ConsensusParams,
    Quote,
    compute_consensus,
)
from agents.arbitration.core.reliability import ProviderStats

NOW = 1_700_000_000_000


def q(p: str, price: float, age: int = 0, since: int | None = None) -> Quote:
    return Quote(p, price, NOW - age, since_ms=since)


def stats(**noise: float) -> dict[str, ProviderStats]:
    """Providers with a learned noise variance (bp²) each, all of it white."""
    return {p: ProviderStats(total_var=v, white_var=v, white_samples=1) for p, v in noise.items()}


def test_inverse_variance_weighting() -> None:
    # a (1 bp²) and b (4 bp²): weights 4:1, so the price is 1/5 of the way from a to b
    r = compute_consensus([q("a", 100.0), q("b", 100.05)], NOW, stats(a=1.0, b=4.0))
    assert r is not None and r.used == ("a", "b") and r.rejected == ()
    assert math.isclose(r.price, 100.01, rel_tol=1e-12)
    assert math.isclose(r.variance_bps2, 1 / (1 / 1 + 1 / 4))


def test_band_and_confidence_follow_from_the_variance() -> None:
    r = compute_consensus([q("a", 100.0)], NOW, stats(a=4.0))
    assert r is not None and r.price == 100.0 and "single_source" in r.flags
    half = Z_90 * 2.0 * 100.0 / 1e4  # sd 2 bp
    assert math.isclose(r.band_high - r.price, half) and math.isclose(r.price - r.band_low, half)
    # the probability that a normal error of sd 2 bp is within 2 bp: 68.27 %
    assert math.isclose(r.confidence, math.erf(1 / math.sqrt(2)))
    assert math.isclose(r.confidence, 0.6827, abs_tol=1e-4)


def test_the_documented_example() -> None:
    """docs/ARBITRATION.md, "Consensus": the worked example, to the digits it shows."""
    quotes = [q("a", 100.0), q("b", 100.03, 500), q("c", 99.95, 1_000), q("d", 101.0)]
    r = compute_consensus(quotes, NOW, stats(a=2.25, b=9.0, c=36.0, d=144.0), 0.0015)
    assert r is not None and r.used == ("a", "b", "c") and r.rejected == ("d",)
    assert [round(w, 4) for w in r.weights] == [0.7800, 0.1767, 0.0433]
    assert round(r.price, 5) == 100.00314 and round(r.variance_bps2, 3) == 1.755
    assert (round(r.band_low, 5), round(r.band_high, 5)) == (99.98135, 100.02493)
    assert round(r.confidence, 3) == 0.869 and r.flags == ("outliers_rejected",)


def test_one_bad_print_is_excluded_and_comes_back_only_within_the_readmit_distance() -> None:
    learned = stats(a=1.0, b=1.0, c=1.0, d=1.0)
    r = compute_consensus(
        [q("a", 100.0), q("b", 100.02), q("c", 99.98), q("d", 105.0)], NOW, learned
    )
    assert r is not None and r.rejected == ("d",) and "outliers_rejected" in r.flags
    assert abs(r.price - 100.0) < 0.03
    learned["d"].excluded = True  # what the processor records (hysteresis)
    quotes = [q("a", 100.0), q("b", 100.0), q("c", 100.0)]
    # 20 bp off: inside the 25 bp exclusion distance, outside the 12.5 bp readmit distance
    still_out = compute_consensus([*quotes, q("d", 100.2)], NOW, learned)
    assert still_out is not None and still_out.rejected == ("d",)
    fresh = stats(a=1.0, b=1.0, c=1.0, d=1.0)
    never_out = compute_consensus([*quotes, q("d", 100.2)], NOW, fresh)
    assert never_out is not None and never_out.rejected == ()
    back = compute_consensus([*quotes, q("d", 100.1)], NOW, learned)  # 10 bp: readmitted
    assert back is not None and back.rejected == ()


def test_two_sources_cannot_exclude_each_other() -> None:
    r = compute_consensus([q("a", 100.0), q("b", 110.0)], NOW, stats(a=1.0, b=1.0))
    assert r is not None and r.rejected == () and r.used == ("a", "b")


def test_a_stale_quote_drops_out_and_an_old_one_weighs_less() -> None:
    r = compute_consensus([q("a", 100.0), q("b", 100.01), q("c", 90.0, age=60_000)], NOW)
    assert r is not None and "c" not in r.used and 100.0 <= r.price <= 100.01
    # same noise, b 5 s older: with drift 0.001 bp²/ms b's variance is 1 + 5 = 6 bp²
    aged = compute_consensus(
        [q("a", 100.0), q("b", 100.07, age=5_000)], NOW, stats(a=1.0, b=1.0), 0.001
    )
    assert aged is not None and math.isclose(aged.price, 100.01, rel_tol=1e-12)


def test_a_repeated_price_ages_from_its_first_appearance() -> None:
    learned = stats(a=1.0, b=1.0)
    moving = compute_consensus([q("a", 100.0), q("b", 100.07)], NOW, learned, 0.001)
    frozen = compute_consensus(
        [q("a", 100.0), q("b", 100.07, since=NOW - 5_000)], NOW, learned, 0.001
    )
    assert moving is not None and frozen is not None
    assert math.isclose(moving.price, 100.035, rel_tol=1e-12)
    assert math.isclose(frozen.price, 100.01, rel_tol=1e-12)
    assert frozen.confidence < moving.confidence


def test_copies_share_one_vote() -> None:
    learned = stats(a=1.0, b=1.0, c=1.0)
    quotes = [q("a", 100.0), q("b", 100.03), q("c", 100.03)]
    independent = compute_consensus(quotes, NOW, learned)
    copies = compute_consensus(quotes, NOW, learned, 0.0, None, {("b", "c")})
    assert independent is not None and copies is not None
    assert math.isclose(independent.price, 100.02, rel_tol=1e-12)
    assert math.isclose(copies.price, 100.015, rel_tol=1e-12)  # a against b-and-c as one
    assert copies.variance_bps2 > independent.variance_bps2


def test_all_stale() -> None:
    r = compute_consensus([q("a", 100.0, age=50_000), q("b", 101.0, age=40_000)], NOW)
    assert r is not None and r.price == 101.0 and "stale" in r.flags


def test_no_quotes() -> None:
    assert compute_consensus([], NOW) is None


prices = st.lists(st.floats(90, 110), min_size=1, max_size=6)
noises = st.lists(st.floats(0.0, 400.0), min_size=6, max_size=6)


@given(prices, noises)
def test_price_lies_within_the_inliers_range(ps: list[float], vs: list[float]) -> None:
    quotes = [q("abcdef"[i], p) for i, p in enumerate(ps)]
    learned = {"abcdef"[i]: ProviderStats(total_var=v) for i, v in enumerate(vs)}
    r = compute_consensus(quotes, NOW, learned)
    assert r is not None
    used = [x.price for x in quotes if x.provider in r.used]
    assert min(used) <= r.price <= max(used)
    assert 0.0 <= r.confidence <= 1.0
    assert r.band_low <= r.price <= r.band_high


@given(st.lists(st.floats(0.1, 400.0), min_size=1, max_size=6), st.floats(1.01, 10.0))
def test_confidence_rises_as_the_variance_falls(vs: list[float], factor: float) -> None:
    quotes = [q("abcdef"[i], 100.0) for i in range(len(vs))]

    def conf(scale: float) -> float:
        learned = {"abcdef"[i]: ProviderStats(total_var=v * scale) for i, v in enumerate(vs)}
        r = compute_consensus(quotes, NOW, learned)
        assert r is not None
        return r.confidence

    assert conf(1.0) >= conf(factor)


@given(prices, noises)
def test_permuting_providers_changes_nothing(ps: list[float], vs: list[float]) -> None:
    quotes = [q("abcdef"[i], p, age=i * 100) for i, p in enumerate(ps)]
    learned = {"abcdef"[i]: ProviderStats(total_var=v) for i, v in enumerate(vs)}
    first = compute_consensus(quotes, NOW, learned, 0.002)
    for perm in itertools.islice(itertools.permutations(quotes), 24):
        assert compute_consensus(list(perm), NOW, learned, 0.002) == first


@given(st.floats(1e-300, 1e300))
def test_a_single_quote_is_the_price_exactly(price: float) -> None:
    r = compute_consensus([q("a", price)], NOW, params=ConsensusParams())
    assert r is not None and r.price == price


def test_a_persistent_error_does_not_widen_its_own_exclusion_limit() -> None:
    """A feed 40 bp off with 1 bp of white noise has learned a large error (its miss against
    the others); the limit is still 25 bp, set by its white noise."""
    learned = stats(a=1.0, b=1.0, c=1.0, liar=1600.0)
    learned["liar"].white_var, learned["liar"].white_samples = 1.0, 50
    quotes = [q("a", 100.0), q("b", 100.01), q("c", 99.99), q("liar", 100.4)]
    r = compute_consensus(quotes, NOW, learned)
    assert r is not None and r.rejected == ("liar",)


def test_copies_count_one_vote_in_the_median() -> None:
    """Four honest quotes and four copies of one source 40 bp off: counted once each, the
    copies are one vote against four, and excluded."""
    honest = [q(p, 100.0 + d) for p, d in zip("abcd", (0.0, 0.01, -0.01, 0.02), strict=True)]
    liars = [q(f"l{i}", 100.4) for i in range(4)]
    pairs = {(f"l{i}", f"l{j}") for i in range(4) for j in range(i + 1, 4)}
    r = compute_consensus([*honest, *liars], NOW, copies=pairs)
    assert r is not None and r.used == ("a", "b", "c", "d")
    counted_apart = compute_consensus([*honest, *liars], NOW)
    assert counted_apart is not None and counted_apart.rejected == ()  # the median was between


# -- the filter (step 4) against the textbook estimate ---------------------------------------

quotes_at_times = st.lists(
    st.tuples(
        st.floats(99.0, 101.0),  # price
        st.floats(0.01, 200.0),  # noise r_i (bp²)
        st.integers(0, 20_000),  # how long before now its information is (ms)
    ),
    min_size=1,
    max_size=6,
)


@given(quotes_at_times, st.floats(0.0, 0.01))
def test_the_filter_is_the_best_linear_unbiased_estimate(
    quotes: list[tuple[float, float, int]], drift: float
) -> None:
    """With errors e_i against the truth now of covariance r_i [i = j] + drift x min(age_i,
    age_j) (a random walk shared since each quote's time), the best linear unbiased estimate
    has weights C^-1 1 / (1' C^-1 1) and variance 1 / (1' C^-1 1) (generalised least squares).
    The filter must give exactly that, whatever the order of the quotes."""
    import numpy as np

    from agents.arbitration.core.consensus import _combine

    prices = [p for p, _, _ in quotes]
    noises = [r for _, r, _ in quotes]
    infos = [NOW - age for _, _, age in quotes]
    ages = np.array([age for _, _, age in quotes], dtype=float)
    cov = np.diag(noises) + drift * np.minimum.outer(ages, ages)
    ones = np.ones(len(quotes))
    solved = np.linalg.solve(cov, ones)
    precision = float(ones @ solved)
    price, variance, weights = _combine(prices, noises, infos, drift, NOW)
    assert np.allclose(weights, solved / precision, rtol=1e-6, atol=1e-9)
    assert math.isclose(variance, 1.0 / precision, rel_tol=1e-6)
    assert math.isclose(price, float(np.dot(solved / precision, prices)), rel_tol=1e-12)
    assert min(prices) <= price <= max(prices)


@given(quotes_at_times, st.floats(0.0, 0.01), st.integers(0, 30_000))
def test_the_leave_one_out_variance_is_the_random_walks(
    quotes: list[tuple[float, float, int]], drift: float, at_age: int
) -> None:
    """``_error_var``: Var(truth(at) - sum w_j y_j) computed from the full covariance of the
    truth at ``at`` and the quotes (Cov(X(s), X(t)) = drift x min(s, t) from a common start,
    which cancels because the weights sum to 1)."""
    import numpy as np

    from agents.arbitration.core.consensus import _combine, _error_var

    noises = [r for _, r, _ in quotes]
    infos = [NOW - age for _, _, age in quotes]
    _, _, weights = _combine([p for p, _, _ in quotes], noises, infos, drift, NOW)
    start = NOW - 60_000  # before every time involved
    times = np.array([NOW - at_age, *infos], dtype=float) - start
    cov = drift * np.minimum.outer(times, times)
    cov[1:, 1:] += np.diag(noises)
    c = np.array([1.0, *(-w for w in weights)])
    expected = float(c @ cov @ c)
    got = _error_var(weights, noises, infos, drift, NOW - at_age)
    assert math.isclose(got, expected, rel_tol=1e-6, abs_tol=1e-9)
