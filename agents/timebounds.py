"""Event time checked at the door: how far a raw record's event time may be from its ingest time.

Both times are in the record (``event_time_ms``: the provider's clock; ``ingest_time_ms``:
ingestion's, when it received it), so the check is a function of the record alone: ingestion
applies it before writing (a record that fails goes to the dead letters, not the event log) and
the arbitration worker applies it again on read (records from other producers), with the same
result on a rebuild.

* **Ahead**: an event time more than ``max_ahead_ms`` after its ingest time is a broken clock
  or a unit error (seconds for milliseconds): refused, whatever the record says it is.
* **Too old for live data**: more than ``max_age_ms`` (per asset type) before its ingest time.
  Live providers report what just happened; a quote a day old is not live. Refused unless the
  record is declared as recorded history (``history: true``, set by the replay provider),
  which the worker keeps from moving the live watermark (docs/RELIABILITY.md).

Defaults: 5 minutes ahead; 1 hour old for crypto and FX (they trade around the clock), 4 days
for equities, indices and commodities (a polled quote on a Monday morning can carry Friday's
close). ``FIML_MAX_AHEAD_MS`` and ``FIML_MAX_AGE_MS_<ASSET>`` change them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from schemas.records import AssetType
from schemas.times import iso_ms

__all__ = ["DEFAULT_MAX_AGE_MS", "TimeBounds"]

HOUR = 3_600_000
DEFAULT_MAX_AGE_MS: dict[str, int] = {
    AssetType.CRYPTO.value: HOUR,
    AssetType.FX.value: HOUR,
    AssetType.EQUITY.value: 96 * HOUR,
    AssetType.INDEX.value: 96 * HOUR,
    AssetType.COMMODITY.value: 96 * HOUR,
}


@dataclass(frozen=True, slots=True)
class TimeBounds:
    max_ahead_ms: int = 300_000
    max_age_ms: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_MAX_AGE_MS))

    def problem(
        self, event_time_ms: int, ingest_time_ms: int, asset_type: str, history: bool
    ) -> str | None:
        """Why a raw record's event time is refused, or None if it is within the bounds."""
        ahead = event_time_ms - ingest_time_ms
        if ahead > self.max_ahead_ms:
            return (
                f"event time {iso_ms(event_time_ms)} is {ahead / 1000:.0f} s after its "
                f"ingest time (at most {self.max_ahead_ms} ms: FIML_MAX_AHEAD_MS)"
            )
        age = -ahead
        limit = self.max_age_ms.get(asset_type, HOUR)
        if not history and age > limit:
            return (
                f"too old for live data: event time {iso_ms(event_time_ms)} is "
                f"{age / 1000:.0f} s before its ingest time (at most {limit} ms for "
                f"{asset_type}: FIML_MAX_AGE_MS_{asset_type.upper()}); recorded history "
                "must be declared as such (history: true, the replay provider)"
            )
        return None

    @classmethod
    def from_env(cls) -> TimeBounds:
        """Raises: ValueError: a variable is set but is not a whole number."""
        ages = {
            asset: int(os.environ.get(f"FIML_MAX_AGE_MS_{asset.upper()}", str(ms)))
            for asset, ms in DEFAULT_MAX_AGE_MS.items()
        }
        ahead = os.environ.get("FIML_MAX_AHEAD_MS")
        return cls(cls().max_ahead_ms if ahead is None else int(ahead), ages)
