"""How fast a symbol's true price wanders: the variance it adds per millisecond, learned online.

Pure logic, in event time. A quote ``age`` ms old is off the current truth by the move since,
whose variance is ``drift x age`` for a random walk (bp² per ms). The consensus's own price is
sampled every ``WINDOW_MS``: the squared move between two samples, less both samples' own error
variances (the consensus's ``V``), over the time between them, is one observation of ``drift``.
A window of 10 s makes a move large against the consensus's error, so the subtraction is small.
"""

from __future__ import annotations

from dataclasses import dataclass

from agents.arbitration.core.reliability import WINSOR_Z2

__all__ = ["PRIOR_DRIFT", "WINDOW_MS", "Volatility"]

#: The prior (bp² per ms): 1 bp² a second, about 20 % a year; the first windows replace it.
PRIOR_DRIFT = 0.001
WINDOW_MS = 10_000
_PRIOR_SAMPLES = 2
_ALPHA = 0.1  # weight of one window once warmed up: about the last 20 windows (3 minutes)
_FLOOR = 0.01  # bp²: the least expectation a move is winsorised against


@dataclass(slots=True)
class Volatility:
    drift: float = PRIOR_DRIFT  # bp² per ms; may dip below 0 (read it through ``per_ms``)
    samples: int = 0
    anchor_ms: int = -1
    anchor_price: float = 0.0
    anchor_var: float = 0.0

    def per_ms(self) -> float:
        return self.drift if self.drift > 0.0 else 0.0

    def observe(self, now_ms: int, price: float, variance_bps2: float) -> None:
        """Account for the consensus ``price`` (error variance ``variance_bps2``) at
        ``now_ms``; event time never goes back for a symbol."""
        elapsed = now_ms - self.anchor_ms
        if self.anchor_ms >= 0 and elapsed < WINDOW_MS:
            return
        if self.anchor_ms >= 0:
            move_bps = (price / self.anchor_price - 1.0) * 1e4
            # Winsorised like every learned figure (reliability.py): one absurd price (a jump
            # to 1e300 overflows the square) moves the drift by a bounded step and never makes
            # it infinite, which would silence the symbol and make its state unsaveable.
            explained = variance_bps2 + self.anchor_var
            expected = max(self.per_ms() * elapsed + explained, _FLOOR)
            move2 = min(move_bps * move_bps, WINSOR_Z2 * expected)
            sample = (move2 - explained) / elapsed
            alpha = max(1.0 / (self.samples + 1 + _PRIOR_SAMPLES), _ALPHA)
            self.drift += alpha * (sample - self.drift)
            self.samples += 1
        self.anchor_ms, self.anchor_price, self.anchor_var = now_ms, price, variance_bps2

    def to_list(self) -> list[float | int]:
        return [self.drift, self.samples, self.anchor_ms, self.anchor_price, self.anchor_var]

    @classmethod
    def from_list(cls, data: list[float | int]) -> Volatility:
        d, n, t, p, v = data
        return cls(float(d), int(n), int(t), float(p), float(v))
