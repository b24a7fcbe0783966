"""Provider quality, learned online per (symbol, provider) from what the stream shows.

Pure logic, in event time. The consensus needs one number per provider, the variance of its
error (``noise_var``, bp²), and nobody knows the truth, so it is learned two ways and the larger
is used:

* ``total_var``, by leave-one-out: when a provider ticks, its quote is compared with the
  weighted mean of the *other* providers' quotes (leaving out its copies too, copies.py). That
  mean's error is independent of this provider's, so ``E[(p_i - others)²] = noise_i + drift x
  age_i + V_others``, and ``total_var`` averages ``(p_i - others)² - V_others - drift x age_i``
  (the others' variance and the true price's move while the quote aged are known to the
  model). Against the consensus including itself, a provider that dominates the consensus would
  agree with itself and never learn its error. It sees every kind of error (noise, a lag, a
  frozen feed, a bias) but is noisy for the best provider, whose error is the smallest part of
  each observation: it averages slowly (``ALPHA``), and a change detector (a one-sided CUSUM on
  the squared miss in units of its expectation) restarts it from a fast average when the
  provider's error grows, so a provider that degrades is followed within a few of its ticks.
* ``white_var``, from the provider alone: the squared change between its consecutive quotes
  is twice the part of its noise that changes from tick to tick (plus the true price's move in
  between, small against the noise at a provider's tick rate: ``WHITE_SHARE`` of it counts).
  Precise (nothing else is in it) but blind to errors that persist.

Both start from a prior and are winsorised (no single observation counts for more than 4 sigma),
so a bad print that got past the exclusion moves them a little. docs/ARBITRATION.md has the
figures.

The consensus also needs each provider's hidden lag (``info_lag_ms``, learned by lags.py):
leave-one-out comparisons are made at the truth its quote shows, its event time less the lag.

Also kept, for the health records: ``gap_ms`` (time between ticks) and ``lag_ms`` (how far a
tick's event time trails the symbol's newest), and the exclusion state of the consensus.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = [
    "ALPHA",
    "ERROR_SCALE_BPS",
    "PRIOR_NOISE_VAR",
    "PRIOR_SAMPLES",
    "ProviderStats",
]

#: A newcomer's noise variance (bp²): a standard deviation of 5 bp, until its ticks say more.
PRIOR_NOISE_VAR = 25.0
#: How many observations the prior is worth.
PRIOR_SAMPLES = 4
#: Weight of one new observation once warmed up (an average over about 2 / ALPHA of them).
ALPHA = 0.005
#: The fast average that a detected change jumps to (about the last 20 observations).
FAST_ALPHA = 0.1
#: The change detector: each observation adds its squared miss in units of its expectation
#: less CUSUM_K, and a sum past CUSUM_H is a change (a sixfold variance takes about 3 ticks).
CUSUM_K = 3.0
CUSUM_H = 30.0
#: No single observation counts for more than this many times its expectation (4 sigma).
WINSOR_Z2 = 16.0
#: Weight of one tick-to-tick change in the white part once warmed up.
WHITE_ALPHA = 0.02
#: The share of ``white_var`` that is noise. The tick-to-tick change also holds the true price's
#: move in between (``drift x gap / 2``, about a tenth of the fastest demo provider's noise),
#: which is not subtracted with the learned drift: a source that moves the consensus could then
#: talk the honest providers' noise down (found: four copies of a liar took a symbol over).
#: Without it the larger-of-two estimate is biased high and the band covers 93 %, not 90 %.
WHITE_SHARE = 0.9
#: The least expectation a change is winsorised against (bp²).
WHITE_FLOOR = 0.01
#: Ticks before its interval counts for silence (``silent``), and the least silence that is a
#: provider down (ms): a feed ticking every 50 ms is not down after a 0.1 s hiccup.
SILENCE_AFTER_TICKS = 10
MIN_SILENCE_MS = 1_000
ERROR_SCALE_BPS = 10.0  # an error of 10 bp halves the accuracy factor of ``reliability``
_TIMING_ALPHA = 0.05  # weight of one tick in gap_ms and lag_ms


@dataclass(slots=True)
class ProviderStats:
    """The learned quality of one provider for one symbol (mutable, updated in place)."""

    total_var: float = PRIOR_NOISE_VAR  # bp², the variance of its error (leave-one-out)
    samples: int = 0  # observations of total_var so far
    fast_var: float = PRIOR_NOISE_VAR
    cusum: float = 0.0
    white_var: float = 0.0  # bp², the part that changes from one tick to the next
    white_samples: int = 0
    prev_price: float = 0.0  # its previous quote that was not excluded (0: none yet)
    prev_ms: int = -1
    excluded: bool = False  # excluded from the consensus at its last quote (hysteresis)
    gap_ms: float = 0.0
    lag_ms: float = 0.0
    last_time_ms: int = -1
    ticks: int = 0
    rejections: int = 0
    last_health_ms: int = -1
    last_state: str = ""
    #: the lag hidden behind its timestamps (ms, lags.py): its quotes show the truth of then
    info_lag_ms: int = 0

    @property
    def noise_var(self) -> float:
        """The variance of its error (bp²) the consensus uses: the larger of
        ``total_var`` and ``WHITE_SHARE x white_var`` (module docstring)."""
        white = WHITE_SHARE * self.white_var
        return white if white > self.total_var else self.total_var

    @property
    def white_noise_var(self) -> float:
        """The white part of its noise (bp², never below 0), the prior until it has ticked
        twice. Its own, never measured against the others: a consensus that others have
        misled does not change it (the exclusion limits and the copy test use it)."""
        if not self.white_samples:
            return PRIOR_NOISE_VAR
        return self.white_var if self.white_var > 0.0 else 0.0

    @property
    def error_bps(self) -> float:
        """The standard deviation of its error, in basis points."""
        return math.sqrt(max(self.noise_var, 0.0))

    def on_tick(self, time_ms: int, newest_ms: int) -> None:
        """Account for one tick with event time ``time_ms`` when the symbol's newest is
        ``newest_ms``."""
        last = self.last_time_ms
        if last >= 0 and time_ms >= last:
            self.gap_ms += _TIMING_ALPHA * ((time_ms - last) - self.gap_ms)
        lag = max(newest_ms - time_ms, 0)
        self.lag_ms += _TIMING_ALPHA * (lag - self.lag_ms)
        if time_ms > last:
            self.last_time_ms = time_ms
        self.ticks += 1

    def learn(self, miss2: float, explained: float) -> None:
        """One leave-one-out observation (module docstring): the squared miss against the
        others' mean, of which ``explained`` (bp², the others' variance and the drift while
        the quote aged) is not this provider's noise. A single sample ``miss2 - explained`` may
        be negative (the others' mean was lucky); the average is floored where it is used.

        A change detector (one-sided CUSUM on the squared miss in units of its expectation)
        catches a provider whose error grew: then the slow average jumps to the fast one."""
        expected = max(self.noise_var, 0.0) + explained
        # winsorised: one wild miss (a bad print that got through) moves the average a little
        miss2 = min(miss2, WINSOR_Z2 * expected)
        sample_var = miss2 - explained
        alpha = max(1.0 / (self.samples + 1 + PRIOR_SAMPLES), ALPHA)
        self.total_var += alpha * (sample_var - self.total_var)
        self.fast_var += max(alpha, FAST_ALPHA) * (sample_var - self.fast_var)
        self.samples += 1
        z2 = miss2 / max(expected, 1e-12)
        self.cusum = max(0.0, self.cusum + z2 - CUSUM_K)
        if self.cusum > CUSUM_H:
            self.cusum = 0.0
            if self.fast_var > self.total_var:
                # a change: start the average again from the fast one's value, as a prior
                self.total_var = self.fast_var
                self.samples = 0

    def learn_white(self, price: float, news_ms: int) -> None:
        """Its new quote (not excluded) against its previous one: half the squared change is
        the white part of its noise. The true price's move in between is left in (a little
        too much, for a slow provider): subtracting the learned drift would let whoever moves
        the consensus (volatility.py) talk this estimate down."""
        if self.prev_price > 0.0 and news_ms > self.prev_ms:
            change = (price / self.prev_price - 1.0) * 1e4
            # winsorised as in ``learn``: a bad print that got through moves it a little (the
            # floor keeps a provider whose estimate fell to 0 able to climb back)
            expected = 2.0 * max(self.noise_var, WHITE_FLOOR)
            change2 = min(change * change, WINSOR_Z2 * expected)
            alpha = max(1.0 / (self.white_samples + 1), WHITE_ALPHA)
            self.white_var += alpha * (change2 / 2.0 - self.white_var)
            self.white_samples += 1
        self.prev_price, self.prev_ms = price, news_ms

    def reliability(self, stale_ms: int) -> float:
        """A 0..1 summary for people (the health records), not used by the consensus:
        accuracy (1 / (1 + error_bps / 10 bp)) x promptness."""
        accuracy = 1.0 / (1.0 + self.error_bps / ERROR_SCALE_BPS)
        promptness = 1.0 / (1.0 + (self.gap_ms + self.lag_ms) / max(stale_ms, 1))
        return accuracy * promptness

    def silent(self, now_ms: int, stale_ms: int) -> bool:
        """Silent for longer than twice its expected interval (the learned gap between its
        ticks, once it has ticked ``SILENCE_AFTER_TICKS`` times; ``stale_ms`` before that,
        and at most): "connected but mute" is a provider down. In event time, which the
        symbol's other providers move on: a market where every provider is quiet is not a
        dead provider (the gateway tells that apart by the clock, gateway/liveness.py)."""
        if self.last_time_ms < 0:
            return True
        limit: float = stale_ms
        if self.ticks >= SILENCE_AFTER_TICKS:
            limit = min(stale_ms, max(2 * self.gap_ms, MIN_SILENCE_MS))
        return now_ms - self.last_time_ms > limit

    def state(self, now_ms: int, stale_ms: int, reliability: float | None = None) -> str:
        """ "down" when silent (``silent``), "degraded" when excluded or unreliable, else
        "up"; ``reliability`` is ``self.reliability(stale_ms)`` when the caller already has
        it."""
        if self.silent(now_ms, stale_ms):
            return "down"
        if reliability is None:
            reliability = self.reliability(stale_ms)
        return "degraded" if self.excluded or reliability < 0.5 else "up"

    def to_list(self) -> list[float | int | str | bool]:
        return [
            self.total_var,
            self.samples,
            self.fast_var,
            self.cusum,
            self.white_var,
            self.white_samples,
            self.prev_price,
            self.prev_ms,
            self.excluded,
            self.gap_ms,
            self.lag_ms,
            self.last_time_ms,
            self.ticks,
            self.rejections,
            self.last_health_ms,
            self.last_state,
            self.info_lag_ms,
        ]

    @classmethod
    def from_list(cls, data: list[float | int | str | bool]) -> ProviderStats:
        if len(data) == 8:  # saved before issue 16: its error was against the consensus
            _e, g, lag, t, n, r, h, s = data
            return cls(
                gap_ms=float(g),
                lag_ms=float(lag),
                last_time_ms=int(t),
                ticks=int(n),
                rejections=int(r),
                last_health_ms=int(h),
                last_state=str(s),
            )
        # 16 fields: saved before hidden lags were learned
        v, k, f, c, w, wk, pp, pm, x, g, lag, t, n, r, h, s, *hidden = data
        return cls(
            float(v),
            int(k),
            float(f),
            float(c),
            float(w),
            int(wk),
            float(pp),
            int(pm),
            bool(x),
            float(g),
            float(lag),
            int(t),
            int(n),
            int(r),
            int(h),
            str(s),
            int(hidden[0]) if hidden else 0,
        )
