"""Consensus on hand-built cases and hypothesis properties."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from agents.arbitration.consensus import ConsensusParams, Quote, compute_consensus

NOW = 1_700_000_000_000
REL = {p: 0.8 for p in "abcdef"}


def q(p: str, price: float, age: int = 0) -> Quote:
    return Quote(p, price, NOW - age)


def test_agreeing_providers() -> None:
    r = compute_consensus([q("a", 100.0), q("b", 100.01), q("c", 99.99)], NOW, REL, {})
    assert r is not None and 99.99 <= r.price <= 100.01
    assert r.rejected == () and r.flags == () and r.confidence > 0.5
    assert r.band_low <= r.price <= r.band_high


def test_one_bad_print_is_rejected() -> None:
    r = compute_consensus([q("a", 100.0), q("b", 100.02), q("c", 99.98), q("d", 105.0)],
                          NOW, REL, {})
    assert r is not None and r.rejected == ("d",) and "outliers_rejected" in r.flags
    assert abs(r.price - 100.0) < 0.03


def test_frozen_provider_goes_stale_and_drops_out() -> None:
    r = compute_consensus([q("a", 100.0), q("b", 100.01), q("c", 90.0, age=60_000)], NOW, REL, {})
    assert r is not None and "c" not in r.used and 100.0 <= r.price <= 100.01


def test_single_provider() -> None:
    r = compute_consensus([q("a", 42.5)], NOW, REL, {})
    assert r is not None and r.price == 42.5 and "single_source" in r.flags
    both = compute_consensus([q("a", 42.5), q("b", 42.5)], NOW, REL, {})
    assert both is not None and r.confidence < both.confidence


def test_all_stale() -> None:
    r = compute_consensus([q("a", 100.0, age=50_000), q("b", 101.0, age=40_000)], NOW, REL, {})
    assert r is not None and r.price == 101.0 and "stale" in r.flags
    assert r.confidence < 0.3


def test_no_quotes() -> None:
    assert compute_consensus([], NOW, REL, {}) is None


prices = st.lists(st.floats(90, 110), min_size=1, max_size=6)


@given(prices)
def test_price_lies_within_the_inliers_range(ps: list[float]) -> None:
    quotes = [q("abcdef"[i], p) for i, p in enumerate(ps)]
    r = compute_consensus(quotes, NOW, REL, {})
    assert r is not None
    used = [x.price for x in quotes if x.provider in r.used]
    # votes extend each price by its own uncertainty c (here the 0.5 bps floor)
    assert min(used) * (1 - 1e-4) <= r.price <= max(used) * (1 + 1e-4)
    assert 0.0 <= r.confidence <= 1.0


@given(st.lists(st.floats(-1, 1), min_size=2, max_size=6), st.floats(1e-4, 5e-3))
def test_confidence_falls_as_dispersion_grows(devs: list[float], s: float) -> None:
    keep_all = ConsensusParams(floor_bps=1e9)  # same inliers at every scale

    def conf(scale: float) -> float:
        quotes = [q("abcdef"[i], 100 * (1 + scale * d)) for i, d in enumerate(devs)]
        r = compute_consensus(quotes, NOW, REL, {}, keep_all)
        assert r is not None
        return r.confidence

    assert conf(2 * s) <= conf(s) + 1e-12


@given(prices)
def test_permuting_providers_changes_nothing(ps: list[float]) -> None:
    quotes = [q("abcdef"[i], p, age=i * 100) for i, p in enumerate(ps)]
    first = compute_consensus(quotes, NOW, REL, {})
    for perm in itertools.islice(itertools.permutations(quotes), 24):
        assert compute_consensus(list(perm), NOW, REL, {}) == first
