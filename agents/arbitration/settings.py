"""Arbitration settings: one frozen object, read from the environment once.

Every knob that shapes the outputs is an event-time quantity or a batch size; none of them reads
a clock. The wall-clock knobs, ``commit_ms`` and ``transaction_timeout_ms``, only say when state and
outputs are committed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from agents.timebounds import TimeBounds
from schemas.records import AssetType

__all__ = ["DEFAULT_STALE_MS", "ENGINES", "ArbitrationSettings"]

#: The arbitration engines (``FIML_ARB_ENGINE``): the compiled core first, the default.
ENGINES = ("compiled", "python")

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


def _engine(name: str) -> str:
    if name not in ENGINES:
        raise ValueError(f"FIML_ARB_ENGINE is {name!r}: expected one of {', '.join(ENGINES)}")
    return name


@dataclass(frozen=True, slots=True)
class ArbitrationSettings:
    grace_ms: int = 2_000  # a window closes when the watermark passes its end + grace
    throttle_ms: int = 500  # at most one open-candle update per symbol per this event time
    # At most one fiml.quotes record per symbol per this event time (the first after a quiet
    # spell at once). Every price record carries the newest consensus bid and ask, so nothing
    # is lost: a quote a tick is what made a raw tick cost 2.5 output records (issue 19).
    quote_ms: int = 250
    health_every_ms: int = 5_000  # ProviderHealth per (symbol, provider), or on state change
    dedup_ms: int = 10_000  # how long a trade is remembered for de-duplication
    stale_ms: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_STALE_MS))
    batch_max: int = 2_000  # most records per consumer fetch, which is one processed batch
    # Symbols one raw partition may hold: a partition's mark (every symbol state, about 4 KiB
    # each with four providers, their learned statistics and their pairs: copies.py) must stay
    # under MARK_MAX_BYTES (16 MiB), and the worker's memory bounded whatever symbols a
    # producer invents. A record of a new symbol past it is dead-lettered.
    max_symbols: int = 3_000
    # event time against the record's own ingest time (agents/timebounds.py)
    time_bounds: TimeBounds = field(default_factory=TimeBounds)
    # Wall-clock, the knobs that are: how often a partition's transaction (its outputs, state
    # and offset) is committed, which is how long its outputs wait before readers on
    # read_committed see them; and how long an open transaction may live before the broker
    # aborts it. They change when outputs appear and how much a restart redoes, never what
    # the outputs are.
    commit_ms: int = 100
    transaction_timeout_ms: int = 60_000
    # Which engine applies the records (agents/arbitration/engine.py): "compiled", the Rust
    # core (native/arbcore, byte-identical outputs), or "python", the reference.
    engine: str = "compiled"

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
            quote_ms=_env_int("FIML_ARB_QUOTE_MS", base.quote_ms),
            health_every_ms=_env_int("FIML_ARB_HEALTH_MS", base.health_every_ms),
            dedup_ms=_env_int("FIML_ARB_DEDUP_MS", base.dedup_ms),
            stale_ms=stale,
            batch_max=_env_int("FIML_ARB_BATCH", base.batch_max),
            max_symbols=_env_int("FIML_ARB_MAX_SYMBOLS", base.max_symbols),
            time_bounds=TimeBounds.from_env(),
            commit_ms=_env_int("FIML_ARB_COMMIT_MS", base.commit_ms),
            transaction_timeout_ms=_env_int(
                "FIML_ARB_TRANSACTION_TIMEOUT_MS", base.transaction_timeout_ms
            ),
            engine=_engine(os.environ.get("FIML_ARB_ENGINE", base.engine)),
        )
