"""Hidden lags: a provider that stamps an old price with a current event time, learned online.

Pure logic, in event time. A provider whose pipeline is slow may show the truth of three
seconds ago under today's timestamp. Its quote then looks fresh and precise (its tick-to-tick
noise is small) while it is off by the market's move since: the consensus would trust it far
too much and be overconfident. Nothing in one quote shows the lag; the provider's history
against the others' does.

The method, per (symbol, provider). Each time the provider ticks, the worker hands over the
others' estimate of the truth (``consensus.Others``: the price from every other inlier, and the
mean information time of that price, from their stated event times). Seven seconds later the
provider's own quotes around that time are known, and for each candidate lag ``L`` (0, 0.5, ...,
6 s) the squared difference between the others' price at time ``t`` and the provider's quote
stamped ``t + L`` (interpolated between its ticks) is averaged (an EWMA per candidate). For a
random walk with drift ``D`` (bp² per ms, volatility.py) the expected squared difference is

    noise + D x |L - true lag|,

a V whose bottom is the lag. The curve is fitted with that V (its slope ``D`` known, its level
free) over a 100 ms grid; the lag is taken only if the curve really dropped, by at least a
quarter of ``D x lag`` from ``L = 0``, so that noise does not give an honest provider a lag.

Why the delay: a lag shorter than the others' own age could not be seen if the comparison were
made at once (the others' freshest information is older than the provider's quote); comparing
an old reference with the provider's quotes on both sides of it sees the whole V.
Why the others' *stated* times: with their learned lags, each provider's lag would be measured
against the others' learned lags, and lags could feed each other.

The consensus uses the lag as the quote's information time (``news_ms - lag``), so the quote
ages from there (consensus.py), and the leave-one-out learning compares it with the others at
that time (reliability.py).
"""

from __future__ import annotations

import bisect
import math
import operator
from dataclasses import dataclass, field

__all__ = ["CANDIDATES_MS", "LagLearner"]

#: The lags compared (ms): from none to 6 s, every 0.5 s. Longer lags are not looked for (a
#: quote 10 s old is stale anyway, consensus.ConsensusParams.stale_ms).
CANDIDATES_MS = tuple(range(0, 6_001, 500))
MAX_LAG_MS = CANDIDATES_MS[-1]
#: A new reference is kept only when the others' information moved on by this much.
REFERENCE_EVERY_MS = 250
#: Weight of one comparison once warmed up (an average over about 2 / ALPHA = 1,000 of them,
#: four minutes for a provider ticking four times a second): a lag belongs to a provider's
#: pipeline and changes rarely, and the V's depth is small against one comparison's noise.
ALPHA = 0.002
#: Comparisons before the first fit, and between fits.
MIN_SAMPLES = 40
FIT_EVERY = 8
#: The fitted lag's resolution (ms).
FIT_STEP_MS = 100
#: How much of a true lag's drop ``D x lag`` the curve must show for the lag to be taken.
SIGNIFICANT = 0.25

#: One comparison counts as at most this far off (bp): a price of 1e300 then moves the fits a
#: bounded step and never makes them infinite (the state could not be saved).
MAX_MISS_BPS = 1e4

# For each centre c of the fit: the V's shape |L - c| over the candidates, centred (the level is
# free in the least squares, so only deviations from the mean count), and its sum of squares.
_CENTRES = tuple(range(0, MAX_LAG_MS + 1, FIT_STEP_MS))
_SHAPES = tuple(
    tuple(
        abs(lag - c) - sum(abs(x - c) for x in CANDIDATES_MS) / len(CANDIDATES_MS)
        for lag in CANDIDATES_MS
    )
    for c in _CENTRES
)
_SQUARES = tuple(sum(x * x for x in shape) for shape in _SHAPES)


@dataclass(slots=True)
class LagLearner:
    """The learned lag of one provider for one symbol (mutable, updated in place)."""

    #: its own recent quotes (event time, price), as long as a reference may need them
    own_times: list[int] = field(default_factory=list)
    own_prices: list[float] = field(default_factory=list)
    #: the others' estimates waiting for the provider's quotes after them (information time,
    #: price), oldest first
    ref_times: list[float] = field(default_factory=list)
    ref_prices: list[float] = field(default_factory=list)
    #: the mean squared difference (bp²) at each of ``CANDIDATES_MS``
    fits: list[float] = field(default_factory=lambda: [0.0] * len(CANDIDATES_MS))
    samples: int = 0

    def observe(
        self,
        time_ms: int,
        price: float,
        others_price: float,
        others_ms: float,
        drift: float,
    ) -> int | None:
        """Account for the provider's quote (``time_ms``, ``price``) and the others' estimate
        at the same moment (``others_price``, information time ``others_ms``). Returns the
        newly fitted lag (ms) when there is one, else None (keep the current one)."""
        if self.own_times and time_ms - self.own_times[-1] > MAX_LAG_MS:
            # back from silence: nothing to interpolate across the gap, start the histories
            # again (the fits stay)
            self.own_times, self.own_prices, self.ref_times, self.ref_prices = [], [], [], []
        if not self.own_times or time_ms > self.own_times[-1]:
            self.own_times.append(time_ms)
            self.own_prices.append(price)
        if not self.ref_times or others_ms >= self.ref_times[-1] + REFERENCE_EVERY_MS:
            self.ref_times.append(others_ms)
            self.ref_prices.append(others_price)
        compared = False
        # every reference whose whole V is now known: the provider has quoted past it + 6 s
        while self.ref_times and self.ref_times[0] + MAX_LAG_MS <= time_ms:
            at, ref = self.ref_times.pop(0), self.ref_prices.pop(0)
            if at >= self.own_times[0]:
                self._compare(at, ref)
                compared = True
        if self.ref_times:  # keep one quote at or before the oldest reference, for interpolation
            cut = bisect.bisect_right(self.own_times, self.ref_times[0]) - 1
            if cut > 0:
                del self.own_times[:cut], self.own_prices[:cut]
        if compared and self.samples >= MIN_SAMPLES and self.samples % FIT_EVERY == 0:
            return fit_lag(self.fits, drift)
        return None

    def _compare(self, at: float, ref: float) -> None:
        alpha = max(1.0 / (self.samples + 1), ALPHA)
        times, prices, fits = self.own_times, self.own_prices, self.fits
        last = len(times) - 1
        i = 0  # times[i] <= t < times[i + 1]; t only grows (times[0] <= at)
        for k, lag in enumerate(CANDIDATES_MS):
            t = at + lag
            while i < last and times[i + 1] <= t:
                i += 1
            if i == last:
                quoted = prices[last]
            else:
                t0 = times[i]
                quoted = prices[i] + (prices[i + 1] - prices[i]) * (t - t0) / (times[i + 1] - t0)
            miss = min(abs(quoted / ref - 1.0) * 1e4, MAX_MISS_BPS)
            fits[k] += alpha * (miss * miss - fits[k])
        self.samples += 1

    def to_list(self) -> list[list[float] | list[int] | int]:
        return [
            self.own_times,
            self.own_prices,
            self.ref_times,
            self.ref_prices,
            self.fits,
            self.samples,
        ]

    @classmethod
    def from_list(cls, data: list[list[float] | list[int] | int]) -> LagLearner:
        own_t, own_p, ref_t, ref_p, fits, n = data
        if not isinstance(fits, list) or len(fits) != len(CANDIDATES_MS):
            raise ValueError(f"a saved lag fit is not {len(CANDIDATES_MS)} numbers: {fits!r}")
        return cls(
            [int(t) for t in _numbers(own_t)],
            [float(p) for p in _numbers(own_p)],
            [float(t) for t in _numbers(ref_t)],
            [float(p) for p in _numbers(ref_p)],
            [float(f) for f in fits],
            int(n) if isinstance(n, int) else 0,
        )


def _numbers(saved: list[float] | list[int] | int) -> list[float] | list[int]:
    if not isinstance(saved, list):
        raise ValueError(f"a saved lag history is not a list: {saved!r}")
    return saved


def fit_lag(fits: list[float], drift: float) -> int:
    """The lag (ms, a multiple of FIT_STEP_MS) whose V ``level + drift x |L - lag|`` fits
    ``fits`` best in least squares, or 0 if the curve does not drop by SIGNIFICANT x drift x
    lag from L = 0 to there (module docstring)."""
    # The squared residual of centre c, less what does not depend on c, is
    # drift² x |shape_c|² - 2 drift x (fits . shape_c) (the shapes are centred).
    best, best_cost = 0, math.inf
    for centre, shape, squares in zip(_CENTRES, _SHAPES, _SQUARES, strict=True):
        cost = drift * squares - 2.0 * sum(map(operator.mul, fits, shape))
        if cost < best_cost:
            best, best_cost = centre, cost
    if best == 0:
        return 0
    step = CANDIDATES_MS[1]
    k, rest = divmod(best, step)
    at_best = fits[k] if rest == 0 else fits[k] + (fits[k + 1] - fits[k]) * rest / step
    return best if fits[0] - at_best >= SIGNIFICANT * drift * best else 0
