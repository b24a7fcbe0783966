"""Providers that copy each other: detected from how often they agree almost exactly, so that a
copy does not get a second vote.

Pure logic, in event time. Two independent providers' quotes differ by a normal error of
variance ``v_a + v_b`` (their white noise, each learned from its own ticks alone, so that a
consensus misled by others cannot make honest providers look like copies), and are within
``sqrt(NEAR_SHARE)`` of that standard deviation of each other (``d² < NEAR_SHARE x (v_a +
v_b)``) only 18 % of the time. Two that share an error (one re-publishes the other, or both
take the same upstream feed) are that close most of the time, even when the copy comes late or
sometimes misses.

For every ordered pair of providers of a symbol, the share of "near" observations is averaged
each time the first one ticks against the second one's latest quote. The two directions are
kept apart because a copier that re-publishes with a delay matches the original when the
original ticks, not when it does itself; and each quote of the second one is counted once, or a
fast provider ticking eight times against a slow one's quote would count one draw eight times.
A pair is a copy when, after ``MIN_SAMPLES`` observations, either direction is near more than
``COPY_RATE`` of the time. The consensus then gives each provider ``1 / (1 + its copies)`` of
a vote, in the median and in the mean (``consensus.py``), and a provider's noise is learned
against the providers that do not copy it (``processor.py``).
"""

from __future__ import annotations

from collections.abc import Iterable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field

__all__ = ["COPY_RATE", "MAX_PROVIDERS", "MIN_SAMPLES", "NEAR_SHARE", "Agreement", "copies_of"]

NEAR_SHARE = 0.05  # "near": within 0.22 of the pair's combined standard deviation
COPY_RATE = 0.5  # independent providers are near 18 % of the time
MIN_SAMPLES = 20
#: Pairs are tracked among at most this many providers of a symbol (memory is quadratic).
MAX_PROVIDERS = 8
_ALPHA = 0.05  # weight of one observation once warmed up (about the last 40 count)


@dataclass(slots=True)
class Agreement:
    """Per symbol: ``pairs["a\\x00b"] = [share of near observations, observations]``, observed
    when ``a`` ticks and ``b`` has a fresh quote."""

    pairs: dict[str, list[float]] = field(default_factory=dict)
    _copies: set[tuple[str, str]] | None = None  # derived from pairs, not saved

    @staticmethod
    def _is_copy(rate: float, n: float) -> bool:
        return n >= MIN_SAMPLES and rate > COPY_RATE

    def observe(self, provider: str, differences: Iterable[tuple[str, int, float, float]]) -> None:
        """``differences``: for each other provider with a fresh quote, (its name, its quote's
        event time, the squared difference of the two quotes, the sum of the two white noise
        variances; both in bp²), when ``provider`` ticks. The true price's move between the two
        quotes is left in: it only makes a pair look less alike."""
        pairs = self.pairs
        for other, other_ms, d2, var_sum in differences:
            key = f"{provider}\x00{other}"
            got = pairs.get(key)
            if got is None:
                if len(pairs) >= MAX_PROVIDERS * (MAX_PROVIDERS - 1):
                    continue
                got = pairs[key] = [0.0, 0.0, -1.0]
            elif got[2] >= other_ms:  # this quote of ``other`` was counted already
                continue
            near = 1.0 if d2 < NEAR_SHARE * var_sum else 0.0
            rate, n, _ = got
            was = self._is_copy(rate, n)
            got[0] = rate = rate + max(1.0 / (n + 1.0), _ALPHA) * (near - rate)
            got[1] = n = n + 1.0
            got[2] = float(other_ms)
            if self._is_copy(rate, n) != was:
                self._copies = None

    def copies(self) -> set[tuple[str, str]]:
        """The pairs (a, b), a < b, that share their errors (module docstring); recomputed
        only when a pair changes side."""
        if self._copies is None:
            out = set()
            for key, (rate, n, _) in self.pairs.items():
                if self._is_copy(rate, n):
                    a, b = key.split("\x00")
                    out.add((a, b) if a < b else (b, a))
            self._copies = out
        return self._copies

    def to_list(self) -> list[list[float | str]]:
        return [[k, *v] for k, v in self.pairs.items()]

    @classmethod
    def from_list(cls, data: list[list[float | str]]) -> Agreement:
        """Also reads pairs saved without the last time counted (the first issue-16 build):
        the next quote of the other provider then counts."""
        pairs = {}
        for key, rate, n, *last in data:
            pairs[str(key)] = [float(rate), float(n), float(last[0]) if last else -1.0]
        return cls(pairs)


def copies_of(provider: str, pairs: AbstractSet[tuple[str, str]]) -> set[str]:
    """The providers that ``pairs`` (as ``Agreement.copies`` gives them) say copy ``provider``."""
    return {b for a, b in pairs if a == provider} | {a for a, b in pairs if b == provider}
