"""Consensus on hand-built cases and hypothesis properties."""

from __future__ import annotations

import itertools
import math

from hypothesis import given
from hypothesis import strategies as st

from agents.arbitration.consensus import (
    _LOW,
    _MAD_TO_SIGMA,
    _OUTLIERS,
    _SINGLE,
    _STALE,
    WIDE_SPREAD,
    ConsensusParams,
    ConsensusResult,
    Quote,
    _median,
    compute_consensus,
    consensus,
    quote_error_bps,
)

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
    r = compute_consensus(
        [q("a", 100.0), q("b", 100.02), q("c", 99.98), q("d", 105.0)], NOW, REL, {}
    )
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


# -- the optimised consensus against the implementation it replaced ------------------------
# The processor's outputs must stay byte-identical, so the optimised ``consensus`` is checked
# against the straightforward implementation it replaced (kept here verbatim as the oracle).


def _reference(
    quotes: list[Quote],
    now_ms: int,
    reliability: dict[str, float],
    error_bps: dict[str, float],
    params: ConsensusParams,
) -> ConsensusResult | None:
    if not quotes:
        return None
    flags: list[str] = []
    stale = params.stale_ms
    # sorted by provider: sums of floats then do not depend on the order quotes come in
    fresh = [q for q in quotes if now_ms - q.time_ms <= stale]
    if not fresh:
        # Nothing fresh: report the freshest quote rather than nothing, clearly flagged.
        fresh = [max(quotes, key=_by_time_provider)]
        flags.append(_STALE)
    elif len(fresh) > 1:
        fresh.sort(key=_by_provider)
    n = len(fresh)
    # per fresh quote: freshness f, weight w = max(reliability, 1e-3) x f
    fs: list[float] = []
    ws: list[float] = []
    for q in fresh:
        if stale > 0:
            age = now_ms - q.time_ms
            age = 0 if age < 0 else (stale if age > stale else age)
            f = 1.0 - 0.75 * age / stale
        else:
            f = 1.0
        r = reliability.get(q.provider, 0.5)
        fs.append(f)
        ws.append((r if r > 1e-3 else 1e-3) * f)
    rejected: list[str] = []
    keep = range(n)
    if n >= 3:
        median = _median([(q.price, ws[i]) for i, q in enumerate(fresh)])
        devs = [abs(q.price - median) for q in fresh]
        mad = _median([(devs[i], ws[i]) for i in keep])
        limit = max(params.mad_k * _MAD_TO_SIGMA * mad, median * params.floor_bps / 1e4)
        if max(devs) > limit:
            keep = [i for i in range(n) if devs[i] <= limit]  # type: ignore[assignment]
            rejected = sorted(fresh[i].provider for i in range(n) if devs[i] > limit)
            flags.append(_OUTLIERS)

    # One pass over the inliers: the votes and every weighted sum, each accumulated left to
    # right from 0 in provider order, exactly as sum() of the same list does in Python 3.11.
    votes: list[tuple[float, float]] = []
    add = votes.append
    unc_bps = total_w = sum_wp = sum_wf = sum_rel = 0.0
    min_c_bps = params.min_c_bps
    for i in keep:
        q = fresh[i]
        p = q.price
        bid, ask = q.bid, q.ask
        half_spread = (ask - bid) / 2 if bid is not None and ask is not None else 0.0
        c = max(half_spread, p * error_bps.get(q.provider, 0.0) / 1e4, p * min_c_bps / 1e4)
        w = ws[i]
        add((p - c, w))
        add((p, w))
        add((p + c, w))
        unc_bps += w * c / p * 1e4
        total_w += w
        sum_wp += w * p
        sum_wf += w * fs[i]
        sum_rel += reliability.get(q.provider, 0.5)
    # One sort of the votes, then the 25th, 50th and 75th weighted percentiles in one walk.
    votes.sort()
    vote_total = 0.0
    for _, w in votes:
        vote_total += w
    tol = 1e-12 * vote_total
    t25, t50, t75 = 0.25 * vote_total - tol, 0.5 * vote_total - tol, 0.75 * vote_total - tol
    q25 = price = q75 = votes[-1][0]
    acc = 0.0
    stage = 0
    for value, w in votes:
        acc += w
        if stage == 0:
            if acc < t25:
                continue
            q25, stage = value, 1
        if stage == 1:
            if acc < t50:
                continue
            price, stage = value, 2
        if acc >= t75:
            q75 = value
            break
    conf_c = max(price - q25, q75 - price)

    mean = sum_wp / total_w
    var = 0.0
    for i in keep:
        var += ws[i] * (fresh[i].price - mean) ** 2
    var /= total_w
    dispersion_bps = math.sqrt(var) / mean * 1e4 + unc_bps / total_w
    agreement = 1.0 / (1.0 + dispersion_bps / params.agreement_bps)
    m = len(keep)
    sources = 1.0 - 0.5**m
    fresh_score = sum_wf / total_w
    if flags and flags[0] == _STALE:
        fresh_score *= 0.25
    rel_score = sum_rel / m
    confidence = min(max(agreement * sources * fresh_score * rel_score, 0.0), 1.0)

    if m == 1:
        flags.append(_SINGLE)
    if confidence < params.low_confidence:
        flags.append(_LOW)
    if conf_c / price * 1e4 > params.wide_spread_bps:
        flags.append(WIDE_SPREAD)
    if len(flags) > 1:
        flags.sort()
    return ConsensusResult(
        price=price,
        band_low=min(max(price - conf_c, price * 1e-6), price),  # a price is > 0
        band_high=max(price + conf_c, price),
        confidence=confidence,
        used=tuple([fresh[i].provider for i in keep]),  # fresh is sorted by provider
        rejected=tuple(rejected),
        flags=tuple(flags),
        errors_bps={q.provider: abs(q.price - price) / price * 1e4 for q in fresh},
    )


def _by_time_provider(q: Quote) -> tuple[int, str]:
    return q.time_ms, q.provider


def _by_provider(q: Quote) -> str:
    return q.provider


_price = st.one_of(st.sampled_from([99.0, 100.0, 100.5]), st.floats(95, 105))
_quote = st.tuples(
    st.sampled_from("abcdef"),
    _price,
    st.integers(-1_000, 30_000),
    st.one_of(st.none(), st.floats(0, 0.5)),
    st.booleans(),
)


@given(
    st.lists(_quote, max_size=7, unique_by=lambda x: x[0]),
    st.dictionaries(st.sampled_from("abcdef"), st.floats(0, 1)),
    st.dictionaries(st.sampled_from("abcdef"), st.floats(0, 50)),
    st.sampled_from([10_000, 0, 1]),
    st.sampled_from([0.0, 0.5]),
)
def test_optimised_consensus_equals_the_reference(
    raw: list[tuple[str, float, int, float | None, bool]],
    rel: dict[str, float],
    err: dict[str, float],
    stale: int,
    min_c: float,
) -> None:
    params = ConsensusParams(stale_ms=stale, min_c_bps=min_c)
    quotes = [
        Quote(p, px, NOW - age, None if s is None else px - s, None if s is None or bad else px + s)
        for p, px, age, s, bad in raw
    ]
    got = compute_consensus(quotes, NOW, rel, err, params)
    assert got == _reference(quotes, NOW, rel, err, params)
    core = consensus(quotes, NOW, rel, err, params)
    if got is None:
        assert core is None
        return
    assert core is not None and core[:7] == (
        got.price,
        got.band_low,
        got.band_high,
        got.confidence,
        got.used,
        got.rejected,
        got.flags,
    )
    assert {q.provider: quote_error_bps(q, got.price) for q in core[7]} == got.errors_bps
