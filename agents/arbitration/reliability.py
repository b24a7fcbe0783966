"""Provider reliability, learned online per (symbol, provider) from what the stream shows.

Pure logic. Three exponentially weighted moving averages, all in event time:

* ``error_bps``: the provider's absolute error against the consensus, in basis points (updated
  only when at least two providers took part, since a lone provider always agrees with itself);
* ``gap_ms``: the time between its consecutive ticks (how often it speaks);
* ``lag_ms``: how far its tick's event time trails the newest event time of the symbol.

reliability = 1 / (1 + error_bps / ERROR_SCALE) x 1 / (1 + (gap_ms + lag_ms) / stale_ms),
so a provider that is accurate and prompt tends to 1, and nothing is hard-coded per provider:
every provider starts from the same prior and earns its weight.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ERROR_SCALE_BPS", "ProviderStats"]

ERROR_SCALE_BPS = 10.0  # an error of 10 bps halves the accuracy factor
_ALPHA = 0.05  # EWMA weight of one new observation (about the last 20 observations count)


@dataclass(slots=True)
class ProviderStats:
    """The learned quality of one provider for one symbol (mutable, updated in place)."""

    error_bps: float = 2.5  # prior: a quarter of the scale, so a newcomer starts at 0.8
    gap_ms: float = 0.0
    lag_ms: float = 0.0
    last_time_ms: int = -1
    ticks: int = 0
    rejections: int = 0
    last_health_ms: int = -1
    last_state: str = ""

    def on_tick(self, time_ms: int, newest_ms: int) -> None:
        """Account for one tick with event time ``time_ms`` when the symbol's newest is
        ``newest_ms``."""
        last = self.last_time_ms
        if last >= 0 and time_ms >= last:
            self.gap_ms += _ALPHA * ((time_ms - last) - self.gap_ms)
        lag = newest_ms - time_ms  # comparisons, not max(): this runs on every tick
        self.lag_ms += _ALPHA * ((lag if lag > 0 else 0) - self.lag_ms)
        if time_ms > last:
            self.last_time_ms = time_ms
        self.ticks += 1

    def on_consensus(self, error_bps: float, rejected: bool) -> None:
        """Account for this provider's error against a multi-source consensus."""
        self.error_bps += _ALPHA * (error_bps - self.error_bps)
        if rejected:
            self.rejections += 1

    def reliability(self, stale_ms: int) -> float:
        accuracy = 1.0 / (1.0 + self.error_bps / ERROR_SCALE_BPS)
        promptness = 1.0 / (1.0 + (self.gap_ms + self.lag_ms) / max(stale_ms, 1))
        return accuracy * promptness

    def state(self, now_ms: int, stale_ms: int, reliability: float | None = None) -> str:
        """ "down" when stale, "degraded" when unreliable, else "up"; ``reliability`` is
        ``self.reliability(stale_ms)`` when the caller already has it."""
        if self.last_time_ms < 0 or now_ms - self.last_time_ms > stale_ms:
            return "down"
        if reliability is None:
            reliability = self.reliability(stale_ms)
        return "degraded" if reliability < 0.5 else "up"

    def to_list(self) -> list[float | int | str]:
        return [
            self.error_bps,
            self.gap_ms,
            self.lag_ms,
            self.last_time_ms,
            self.ticks,
            self.rejections,
            self.last_health_ms,
            self.last_state,
        ]

    @classmethod
    def from_list(cls, data: list[float | int | str]) -> ProviderStats:
        e, g, lag, t, n, r, h, s = data
        return cls(float(e), float(g), float(lag), int(t), int(n), int(r), int(h), str(s))
