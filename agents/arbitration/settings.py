"""Arbitration settings: one frozen object, read from the environment once.

Every knob that shapes the outputs is an event-time quantity or a batch size; none of them reads
a clock. The one wall-clock knob, ``checkpoint_ms``, only says how often state is saved.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from agents.timebounds import TimeBounds
from schemas.records import AssetType

__all__ = ["DEFAULT_STALE_MS", "ArbitrationSettings"]

#: How old (event time) a provider's last quote may be before it stops counting, per asset type.
#: Crypto trades around the clock and providers tick every second; equities and indices through
#: polled APIs (yfinance, Alpha Vantage) refresh far less often.
DEFAULT_STALE_MS: dict[str, int] = {
    AssetType.CRYPTO.value: 10_000,
    AssetType.FX.value: 30_000,
    AssetType.EQUITY.value: 60_000,
    AssetType.INDEX.value: 60_000,
    AssetType.COMMODITY.value: 60_000,
}


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, str(default)))


@dataclass(frozen=True, slots=True)
class ArbitrationSettings:
    grace_ms: int = 2_000  # a window closes when the watermark passes its end + grace
    throttle_ms: int = 500  # at most one open-candle update per symbol per this event time
    health_every_ms: int = 5_000  # ProviderHealth per (symbol, provider), or on state change
    dedup_ms: int = 10_000  # how long a trade is remembered for de-duplication
    stale_ms: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_STALE_MS))
    batch_max: int = 2_000  # most records per consumer fetch, which is one processed batch
    # event time against the record's own ingest time (agents/timebounds.py)
    time_bounds: TimeBounds = field(default_factory=TimeBounds)
    # Wall-clock, the one knob that is: how often a partition's state is saved. It changes how
    # much a restarted worker does again (and repeats), never what it outputs.
    checkpoint_ms: int = 1_000

    def stale_for(self, asset_type: str) -> int:
        return self.stale_ms.get(asset_type, 60_000)

    @classmethod
    def from_env(cls) -> ArbitrationSettings:
        """Settings from ``FIML_ARB_*`` variables (see docs/ARBITRATION.md).

        Raises:
            ValueError: a variable is set but is not a number.
        """
        base = cls()
        stale = dict(base.stale_ms)
        for asset in stale:
            stale[asset] = _env_int(f"FIML_ARB_STALE_MS_{asset.upper()}", stale[asset])
        return cls(
            grace_ms=_env_int("FIML_ARB_GRACE_MS", base.grace_ms),
            throttle_ms=_env_int("FIML_ARB_THROTTLE_MS", base.throttle_ms),
            health_every_ms=_env_int("FIML_ARB_HEALTH_MS", base.health_every_ms),
            dedup_ms=_env_int("FIML_ARB_DEDUP_MS", base.dedup_ms),
            stale_ms=stale,
            batch_max=_env_int("FIML_ARB_BATCH", base.batch_max),
            time_bounds=TimeBounds.from_env(),
            checkpoint_ms=_env_int("FIML_ARB_CHECKPOINT_MS", base.checkpoint_ms),
        )
