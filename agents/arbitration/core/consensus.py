"""Consensus: the latest quote of each provider for one symbol -> one price with a band and a
confidence that mean something.

Pure logic, no I/O and no clock: "now" is an event time passed in by the caller (the newest
event time seen for the symbol), so the same inputs always give the same answer.

The model: the true price is a random walk whose variance grows by ``drift`` bp² per ms
(learned per symbol, ``volatility.Volatility``). Quote ``i`` shows the truth at its
*information time* ``tau_i`` plus an independent error of variance ``r_i`` (its noise, learned,
``reliability.ProviderStats``). ``tau_i`` is its event time, or the time its price last changed
if it repeats itself (a frozen feed brings no news), less its hidden lag (a provider that
stamps an old price with a current time, learned, ``lags.py``). Quotes of different ages share
the walk's moves since the oldest of them: their errors against the truth *now* are correlated,
and treating them as independent would overstate what several old quotes know together. The
method (docs/ARBITRATION.md has the formula and a worked example):

1. quotes older than ``stale_ms`` are dropped (if none is fresh, the freshest one is used and
   the result is flagged ``stale``);
2. one vote per source: a provider counts ``1 / (1 + its copies)`` (``copies.py``) in the
   median and in the estimate (its noise is divided by its vote), so copies of one feed cannot
   outvote the others;
3. exclusion, in the style of the CME CF Real-Time Index, with hysteresis: a quote farther from
   the median of the fresh quotes (by votes) than ``max(exclude_bps, exclude_sigmas x s_i)`` is
   excluded, and an excluded provider comes back only once its quote is within
   ``max(readmit_bps, readmit_sigmas x s_i)``, where ``s_i`` is the standard deviation of its
   white noise and ageing (not of its whole error: a feed that is consistently wrong would
   otherwise widen its own limit). Nobody is newly excluded with fewer than three fresh quotes
   (two cannot say which one is wrong), and never all of them;
4. the price is the best linear unbiased estimate of the truth now from the remaining quotes: a
   Kalman filter over them in the order of their information times (start at the oldest quote;
   to each next one, add the walk's variance in between and weigh the two by their variances),
   then aged to now. With quotes of one age it is the inverse-variance weighted mean; a single
   quote is the price itself;
5. its error variance ``V`` is the filter's; the band is ``price +/- band_z x sqrt(V)`` (90 %
   of the truth inside it when the model holds), and the confidence is the probability that
   the truth is within ``hit_bps`` of the price: ``erf(hit_bps / sqrt(2 V))``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass

from agents.arbitration.core.copies import copies_of
from agents.arbitration.core.reliability import PRIOR_NOISE_VAR, ProviderStats
from schemas.records import QualityFlag

__all__ = [
    "WIDE_SPREAD",
    "ConsensusParams",
    "ConsensusResult",
    "Others",
    "Quote",
    "compute_consensus",
    "consensus",
]

WIDE_SPREAD = QualityFlag.WIDE_SPREAD.value
_STALE = QualityFlag.STALE.value
_OUTLIERS = QualityFlag.OUTLIERS_REJECTED.value
_SINGLE = QualityFlag.SINGLE_SOURCE.value
_LOW = QualityFlag.LOW_CONFIDENCE.value

#: z of a two-sided 90 % normal interval: the band's stated coverage.
Z_90 = 1.6448536269514722


@dataclass(frozen=True, slots=True)
class Quote:
    """The latest observation of one provider for a symbol."""

    provider: str
    price: float
    time_ms: int
    bid: float | None = None
    ask: float | None = None
    #: the event time since which its price has not changed (None: ``time_ms``). A repeated
    #: price brings no news of the moves since, so the quote ages from here (a frozen feed).
    since_ms: int | None = None

    @property
    def news_ms(self) -> int:
        return self.time_ms if self.since_ms is None else self.since_ms


@dataclass(frozen=True, slots=True)
class ConsensusParams:
    """Tuning of the consensus, published in docs/ARBITRATION.md ("Exclusion rules")."""

    stale_ms: int = 10_000
    exclude_bps: float = 25.0  # never exclude a quote closer than this to the median ...
    exclude_sigmas: float = 6.0  # ... or than this many of its own standard deviations
    readmit_bps: float = 12.5  # an excluded provider is back within this of the median ...
    readmit_sigmas: float = 3.0  # ... or this many of its standard deviations
    min_noise_bps: float = 0.1  # no provider is trusted to be closer than this
    hit_bps: float = 2.0  # confidence = P(truth within hit_bps of the price)
    band_z: float = Z_90  # the band is price +/- band_z standard deviations: 90 %
    low_confidence: float = 0.3
    wide_spread_bps: float = 50.0  # the flag for a band wider than this on either side


@dataclass(frozen=True, slots=True)
class Others:
    """What the inliers other than some providers say (``ConsensusResult.without``)."""

    price: float
    #: the variance of the truth at the time asked for less ``price`` (bp²): their noise and
    #: the walk between their information times and that time
    error_var: float
    #: the weighted mean of their *stated* information times (event time, or last change),
    #: without their learned lags (lags.py says why)
    stated_ms: float


@dataclass(frozen=True, slots=True)
class ConsensusResult:
    price: float
    band_low: float
    band_high: float
    confidence: float
    used: tuple[str, ...]  # sorted by provider
    rejected: tuple[str, ...]  # excluded fresh providers, sorted
    flags: tuple[str, ...]
    variance_bps2: float  # V, the price's error variance under the model
    #: the inliers, in ``used`` order, and for each: its weight in the price (they sum to 1),
    #: its noise in the filter (r_i / its vote) and its information time
    quotes: tuple[Quote, ...] = ()
    weights: tuple[float, ...] = ()
    noises: tuple[float, ...] = ()
    infos: tuple[int, ...] = ()
    drift: float = 0.0  # the walk's variance per ms used (bp²)
    now_ms: int = 0

    def without(self, leave_out: AbstractSet[str], at_ms: int) -> Others | None:
        """The estimate from the inliers not in ``leave_out``, with the variance of its error
        against the truth at ``at_ms``; None if no inlier is left out or none remains. A
        provider's quote against the others' estimate (leaving out its copies too) has an
        error independent of its own noise, which is how its noise is learned
        (reliability.py)."""
        keep = [i for i, q in enumerate(self.quotes) if q.provider not in leave_out]
        if not keep or len(keep) == len(self.quotes):
            return None
        infos = [self.infos[i] for i in keep]
        noises = [self.noises[i] for i in keep]
        prices = [self.quotes[i].price for i in keep]
        price, _, weights = _combine(prices, noises, infos, self.drift, self.now_ms)
        stated = sum(w * self.quotes[i].news_ms for w, i in zip(weights, keep, strict=True))
        return Others(price, _error_var(weights, noises, infos, self.drift, at_ms), stated)


def compute_consensus(
    quotes: Sequence[Quote],
    now_ms: int,
    stats: Mapping[str, ProviderStats] | None = None,
    drift_bps2_per_ms: float = 0.0,
    params: ConsensusParams | None = None,
    copies: AbstractSet[tuple[str, str]] = frozenset(),
) -> ConsensusResult | None:
    """``consensus`` with defaults: no learned statistics (every provider at the prior), a
    still market and no copies."""
    return consensus(quotes, now_ms, stats or {}, drift_bps2_per_ms, params or _DEFAULT, copies)


def consensus(
    quotes: Sequence[Quote],
    now_ms: int,
    stats: Mapping[str, ProviderStats],
    drift_bps2_per_ms: float,
    params: ConsensusParams,
    copies: AbstractSet[tuple[str, str]] = frozenset(),
) -> ConsensusResult | None:
    """The consensus of ``quotes`` at event time ``now_ms``; None if there are no quotes.

    ``stats`` gives each provider's learned noise and whether it is excluded (a provider
    without statistics has the prior); ``drift_bps2_per_ms`` is how fast the symbol's variance
    grows with time; ``copies`` holds the pairs (a, b), a < b, of providers that copy each other
    (``copies.py``): each provider's weight is split with its copies among the inliers.
    Raises nothing: bad inputs are the caller's (validated records).
    """
    if not quotes:
        return None
    flags: list[str] = []
    # sorted by provider: sums of floats then do not depend on the order quotes come in
    fresh = sorted((q for q in quotes if now_ms - q.time_ms <= params.stale_ms), key=_by_provider)
    if not fresh:
        # Nothing fresh: report the freshest quote rather than nothing, clearly flagged.
        fresh = [max(quotes, key=_by_time_provider)]
        flags.append(_STALE)
    floor = params.min_noise_bps**2
    noises = []  # r_i: its error but for ageing
    infos = []  # tau_i: the event time of the truth it shows
    scatter = []  # the white part and the ageing only, for the exclusion limits
    for q in fresh:
        s = stats.get(q.provider)
        noise = s.noise_var if s is not None else PRIOR_NOISE_VAR
        white = s.white_noise_var if s is not None else PRIOR_NOISE_VAR
        info = q.news_ms - s.info_lag_ms if s is not None else q.news_ms
        noises.append(max(noise, floor))
        infos.append(info)
        scatter.append(max(white, floor) + drift_bps2_per_ms * (now_ms - info))

    # one vote per source: a provider counts 1 / (1 + its copies) in the median and the mean
    votes = _votes([q.provider for q in fresh], copies)
    keep = _exclusion(fresh, scatter, votes, stats, params)
    inliers = [fresh[i] for i in keep]
    if copies and len(keep) < len(fresh):  # copies that were excluded no longer share a vote
        inlier_votes = _votes([q.provider for q in inliers], copies)
    else:
        inlier_votes = [votes[i] for i in keep]
    shares = tuple(noises[i] / v for i, v in zip(keep, inlier_votes, strict=True))
    times = tuple(infos[i] for i in keep)
    rejected = tuple(sorted(q.provider for i, q in enumerate(fresh) if i not in keep))
    if rejected:
        flags.append(_OUTLIERS)
    if len(inliers) == 1:
        flags.append(_SINGLE)
    price, variance, weights = _combine(
        [q.price for q in inliers], shares, times, drift_bps2_per_ms, now_ms
    )
    sd_bps = math.sqrt(variance)
    confidence = math.erf(params.hit_bps / (sd_bps * math.sqrt(2.0)))
    if confidence < params.low_confidence:
        flags.append(_LOW)
    half_bps = params.band_z * sd_bps
    if half_bps > params.wide_spread_bps:
        flags.append(WIDE_SPREAD)
    half = price * half_bps / 1e4
    band_low = max(price - half, price * 1e-6)  # a price is > 0
    band_high = max(price + half, price)
    return ConsensusResult(
        price=price,
        band_low=min(band_low, price),
        band_high=band_high,
        confidence=confidence,
        used=tuple(q.provider for q in inliers),
        rejected=rejected,
        flags=tuple(sorted(flags)),
        variance_bps2=variance,
        quotes=tuple(inliers),
        weights=weights,
        noises=shares,
        infos=times,
        drift=drift_bps2_per_ms,
        now_ms=now_ms,
    )


def _votes(names: list[str], copies: AbstractSet[tuple[str, str]]) -> list[float]:
    """Each provider's share of a vote: 1 / (1 + the number of its copies among ``names``)."""
    if not copies:
        return [1.0] * len(names)
    present = set(names)
    return [1.0 / (1 + len(copies_of(a, copies) & present)) for a in names]


def _exclusion(
    fresh: list[Quote],
    scatter: list[float],
    votes: list[float],
    stats: Mapping[str, ProviderStats],
    params: ConsensusParams,
) -> list[int]:
    """The indexes of the quotes that stay in (step 2 of the module docstring). The limits
    scale with each provider's *white* noise and ageing, not its whole error: an error that
    persists (a biased or hostile feed) would otherwise widen its own limit until it is never
    excluded."""
    if len(fresh) < 2:
        return [0]
    median = _weighted_median([q.price for q in fresh], votes)
    keep = []
    for i, q in enumerate(fresh):
        s = stats.get(q.provider)
        was_excluded = s is not None and s.excluded
        if not was_excluded and len(fresh) < 3:
            keep.append(i)
            continue
        sd = math.sqrt(scatter[i])
        if was_excluded:
            limit = max(params.readmit_bps, params.readmit_sigmas * sd)
        else:
            limit = max(params.exclude_bps, params.exclude_sigmas * sd)
        if abs(q.price - median) / median * 1e4 <= limit:
            keep.append(i)
    return keep or list(range(len(fresh)))  # never exclude everyone


def _combine(
    prices: Sequence[float],
    noises: Sequence[float],
    infos: Sequence[int],
    drift: float,
    now_ms: int,
) -> tuple[float, float, tuple[float, ...]]:
    """The price, its error variance and each quote's weight in it (step 4 of the module
    docstring): a Kalman filter over the quotes in the order of their information times,
    starting from the oldest alone (no prior), then aged to ``now_ms``.

    Each step is a convex combination, so the price never leaves [min, max] of the quotes and
    never overflows for prices near the float limit; the clamp only absorbs rounding."""
    n = len(prices)
    order = sorted(range(n), key=infos.__getitem__)  # stable: ties stay in provider order
    first = order[0]
    price, var, at = prices[first], noises[first], infos[first]
    weights = [0.0] * n
    weights[first] = 1.0
    low = high = price
    for j in order[1:]:
        var += drift * (infos[j] - at)  # the walk moved on since the last information
        at = infos[j]
        gain = var / (var + noises[j])
        price += gain * (prices[j] - price)
        var *= 1.0 - gain
        for k in range(n):
            weights[k] *= 1.0 - gain
        weights[j] = gain
        low, high = min(low, prices[j]), max(high, prices[j])
    var += drift * (now_ms - at)
    return min(max(price, low), high), var, tuple(weights)


def _error_var(
    weights: Sequence[float],
    noises: Sequence[float],
    infos: Sequence[int],
    drift: float,
    at_ms: int,
) -> float:
    """The variance of ``truth(at_ms) - sum_j w_j y_j`` for weights summing to 1: the quotes'
    noise ``sum_j w_j² r_j`` plus the walk's part. For a random walk and coefficients summing
    to 0 (here 1 at ``at_ms`` and ``-w_j`` at ``tau_j``),
    ``Var(sum c_j X(t_j)) = -drift / 2 x sum_jk c_j c_k |t_j - t_k|``."""
    noise = walk = 0.0
    for wj, rj, tj in zip(weights, noises, infos, strict=True):
        noise += wj * wj * rj
        walk += wj * abs(at_ms - tj)
        for wk, tk in zip(weights, infos, strict=True):
            walk -= 0.5 * wj * wk * abs(tj - tk)
    return noise + drift * walk


def _weighted_median(values: list[float], weights: list[float]) -> float:
    """The value at half the total weight; the midpoint of the two values around it when half
    falls exactly between them (so equal weights give the plain median)."""
    pairs = sorted(zip(values, weights, strict=True))
    half = sum(weights) / 2
    tolerance = 1e-12 * half
    acc = 0.0
    for i, (value, weight) in enumerate(pairs):
        acc += weight
        if acc > half + tolerance:
            return value
        if acc >= half - tolerance:
            return value / 2 + pairs[i + 1][0] / 2 if i + 1 < len(pairs) else value
    return pairs[-1][0]


def _by_time_provider(q: Quote) -> tuple[int, str]:
    return q.time_ms, q.provider


def _by_provider(q: Quote) -> str:
    return q.provider


_DEFAULT = ConsensusParams()
