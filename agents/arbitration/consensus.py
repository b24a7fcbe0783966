"""Consensus: the latest quote of each provider for one symbol -> one price with a confidence.

Pure logic, no I/O and no clock: "now" is an event time passed in by the caller (the newest
event time seen for the symbol), so the same quotes always give the same answer.

The method (docs/ARBITRATION.md has the formula and a worked example):

1. quotes older than ``stale_ms`` are dropped (if none is fresh, the freshest one is used and
   the result is flagged ``stale``);
2. weights ``w = reliability x freshness``; a weighted median of the prices is the first guess;
3. outliers are rejected when ``|p - median| > max(k * 1.4826 * MAD, floor_bps)`` (only with
   three or more sources: with two, nobody can tell which one is wrong);
4. each inlier casts Pyth's three votes ``p - c, p, p + c`` with ``c`` its own uncertainty (its
   bid/ask half-spread or its learned error, whichever is larger); the price is the weighted
   median of the votes and the band reaches the farther of the 25th and 75th vote percentiles;
5. confidence = agreement x sources x freshness x reliability, each in [0, 1].
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from schemas.records import QualityFlag

__all__ = [
    "WIDE_SPREAD",
    "ConsensusParams",
    "ConsensusResult",
    "Quote",
    "compute_consensus",
    "weighted_quantile",
]

WIDE_SPREAD = "wide_spread"  # not (yet) in QualityFlag; the field is list[str] by design

_MAD_TO_SIGMA = 1.4826  # MAD of a normal sample x 1.4826 estimates its standard deviation


@dataclass(frozen=True, slots=True)
class Quote:
    """The latest observation of one provider for a symbol."""

    provider: str
    price: float
    time_ms: int
    bid: float | None = None
    ask: float | None = None


@dataclass(frozen=True, slots=True)
class ConsensusParams:
    """Tuning of the consensus; the defaults were measured against the simulator's truth."""

    stale_ms: int = 10_000
    mad_k: float = 4.0
    floor_bps: float = 25.0  # never reject a quote closer than this to the median
    min_c_bps: float = 0.5  # every vote has at least this uncertainty
    agreement_bps: float = 10.0  # dispersion at which agreement is 1/2
    low_confidence: float = 0.3
    wide_spread_bps: float = 50.0


@dataclass(frozen=True, slots=True)
class ConsensusResult:
    price: float
    band_low: float
    band_high: float
    confidence: float
    used: tuple[str, ...]
    rejected: tuple[str, ...]
    flags: tuple[str, ...]
    errors_bps: Mapping[str, float] = field(default_factory=dict)


def weighted_quantile(pairs: Sequence[tuple[float, float]], q: float) -> float:
    """The smallest value whose cumulative weight reaches ``q`` of the total (pairs: value,
    weight; sorted here by value so that the order of the input never matters)."""
    return _quantiles(sorted(pairs), (q,))[0]


def _quantiles(ordered: Sequence[tuple[float, float]], qs: Sequence[float]) -> list[float]:
    """Weighted quantiles (ascending ``qs``) of value-sorted pairs, in one pass."""
    total = 0.0
    for _, w in ordered:
        total += w
    out: list[float] = []
    acc, i = 0.0, 0
    tol = 1e-12 * total  # so that 0.5 of a sum of floats is reached exactly when it should
    for value, weight in ordered:
        acc += weight
        while i < len(qs) and acc >= qs[i] * total - tol:
            out.append(value)
            i += 1
    while len(out) < len(qs):
        out.append(ordered[-1][0])
    return out


def compute_consensus(
    quotes: Sequence[Quote],
    now_ms: int,
    reliability: Mapping[str, float],
    error_bps: Mapping[str, float],
    params: ConsensusParams = ConsensusParams(),
) -> ConsensusResult | None:
    """The consensus of ``quotes`` at event time ``now_ms``; None if there are no quotes.

    ``reliability`` (0..1, default 0.5) and ``error_bps`` (learned error, default 0) are looked
    up by provider. Raises nothing: bad inputs are the caller's (validated records).
    """
    if not quotes:
        return None
    flags: list[str] = []
    stale = params.stale_ms
    # sorted by provider: sums of floats then do not depend on the order quotes come in
    fresh = sorted((q for q in quotes if now_ms - q.time_ms <= stale), key=_by_provider)
    if not fresh:
        # Nothing fresh: report the freshest quote rather than nothing, clearly flagged.
        newest = max(quotes, key=lambda q: (q.time_ms, q.provider))
        fresh = [newest]
        flags.append(QualityFlag.STALE.value)

    def freshness(q: Quote) -> float:
        age = min(max(now_ms - q.time_ms, 0), stale)
        return 1.0 - 0.75 * age / stale if stale > 0 else 1.0

    weights = {
        q.provider: max(reliability.get(q.provider, 0.5), 1e-3) * freshness(q) for q in fresh
    }
    rejected: list[str] = []
    inliers = fresh
    if len(fresh) >= 3:
        median = weighted_quantile([(q.price, weights[q.provider]) for q in fresh], 0.5)
        mad = weighted_quantile([(abs(q.price - median), weights[q.provider]) for q in fresh], 0.5)
        limit = max(params.mad_k * _MAD_TO_SIGMA * mad, median * params.floor_bps / 1e4)
        inliers = [q for q in fresh if abs(q.price - median) <= limit]
        rejected = sorted(q.provider for q in fresh if abs(q.price - median) > limit)
        if rejected:
            flags.append(QualityFlag.OUTLIERS_REJECTED.value)

    votes: list[tuple[float, float]] = []
    unc_bps = 0.0
    for q in inliers:
        half_spread = (q.ask - q.bid) / 2 if q.bid is not None and q.ask is not None else 0.0
        c = max(half_spread, q.price * error_bps.get(q.provider, 0.0) / 1e4,
                q.price * params.min_c_bps / 1e4)
        w = weights[q.provider]
        votes += [(q.price - c, w), (q.price, w), (q.price + c, w)]
        unc_bps += w * c / q.price * 1e4
    q25, price, q75 = _quantiles(sorted(votes), (0.25, 0.5, 0.75))
    conf_c = max(price - q25, q75 - price)

    total_w = sum(weights[q.provider] for q in inliers)
    mean = sum(weights[q.provider] * q.price for q in inliers) / total_w
    var = sum(weights[q.provider] * (q.price - mean) ** 2 for q in inliers) / total_w
    dispersion_bps = math.sqrt(var) / mean * 1e4 + unc_bps / total_w
    agreement = 1.0 / (1.0 + dispersion_bps / params.agreement_bps)
    sources = 1.0 - 0.5 ** len(inliers)
    fresh_score = sum(weights[q.provider] * freshness(q) for q in inliers) / total_w
    if QualityFlag.STALE.value in flags:
        fresh_score *= 0.25
    rel_score = sum(reliability.get(q.provider, 0.5) for q in inliers) / len(inliers)
    confidence = min(max(agreement * sources * fresh_score * rel_score, 0.0), 1.0)

    if len(inliers) == 1:
        flags.append(QualityFlag.SINGLE_SOURCE.value)
    if confidence < params.low_confidence:
        flags.append(QualityFlag.LOW_CONFIDENCE.value)
    if conf_c / price * 1e4 > params.wide_spread_bps:
        flags.append(WIDE_SPREAD)
    errors = {q.provider: abs(q.price - price) / price * 1e4 for q in fresh}
    return ConsensusResult(
        price=price,
        band_low=min(max(price - conf_c, price * 1e-6), price),  # a price is > 0
        band_high=max(price + conf_c, price),
        confidence=confidence,
        used=tuple(sorted(q.provider for q in inliers)),
        rejected=tuple(rejected),
        flags=tuple(sorted(flags)),
        errors_bps=errors,
    )


def _by_provider(q: Quote) -> str:
    return q.provider
