"""Pydantic models of every Kafka topic record: one model per concept, defined once.

Conventions every record follows (other parts code against them):

* ``v`` is the schema version (see docs/SCHEMAS.md for when it changes; now ``SCHEMA_VERSION``).
* Times are **integer milliseconds since the Unix epoch, UTC**. Integers keep arbitration
  deterministic (no float drift, no time zones) and compare fast. ``event_time_ms`` is the
  provider's time for the event; ``ingest_time_ms`` is when ingestion received it.
* The derived records also carry the FIML seed's keys (``timestamp`` as ISO 8601, ``change``,
  ``is_closed``, ``spread``, ``quantity`` ...), so that a seed client reads them unmodified.
  Each is a function of the record's other fields, declared once in the model's ``derived``:
  the model fills a key a producer leaves out and refuses a record whose copy disagrees.
* Prices are finite floats > 0 and sizes finite floats >= 0, stored exactly as given: nothing
  here rounds, and JSON encoding uses the shortest representation that round-trips.
* Models are frozen and forbid unknown keys, so a typo in a producer fails loudly.
* Numbers are strict: ``"1.5"`` (a string) is not a price and ``1.0`` is not an ``int``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from schemas.times import MAX_EPOCH_MS, iso_ms

__all__ = [
    "RECORD_MODELS",
    "SCHEMA_VERSION",
    "AssetType",
    "Interval",
    "OHLCVUpdate",
    "PriceUpdate",
    "ProviderHealth",
    "QualityFlag",
    "QuoteUpdate",
    "RawTick",
    "RawTrade",
    "Record",
    "Side",
    "TradeUpdate",
    "price_change",
]

#: The ``v`` every record is written with (docs/SCHEMAS.md, "Versioning rule").
SCHEMA_VERSION = 2

# Constrained scalar types, shared by every record.
Price = Annotated[float, Field(strict=True, gt=0, allow_inf_nan=False)]
Size = Annotated[float, Field(strict=True, ge=0, allow_inf_nan=False)]
EpochMs = Annotated[
    int, Field(strict=True, ge=0, le=MAX_EPOCH_MS, description="UTC epoch milliseconds")
]
IsoTime = Annotated[
    str,
    Field(
        pattern=r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$",
        description="ISO 8601 UTC with milliseconds, the seed's form (2026-12-04T03:09:22.700Z)",
    ),
]
Finite = Annotated[float, Field(strict=True, allow_inf_nan=False)]
Count = Annotated[int, Field(strict=True, ge=0)]
Unit = Annotated[float, Field(strict=True, ge=0, le=1, allow_inf_nan=False)]
Name = Annotated[str, Field(min_length=1, max_length=64)]
Side = Literal["buy", "sell"]


class AssetType(StrEnum):
    """What kind of instrument a symbol names (see ``schemas.symbols`` for the forms)."""

    CRYPTO = "crypto"
    EQUITY = "equity"
    FX = "fx"
    INDEX = "index"
    COMMODITY = "commodity"


class Interval(StrEnum):
    """A candle interval; windows are aligned to UTC epoch multiples of ``ms``."""

    S1 = "1s"
    M1 = "1m"
    M5 = "5m"
    M15 = "15m"
    H1 = "1h"
    D1 = "1d"

    @property
    def ms(self) -> int:
        """The interval's length in milliseconds."""
        return _INTERVAL_MS[self.value]

    def window_start(self, time_ms: int) -> int:
        """Start (UTC epoch ms) of the window of this interval that contains ``time_ms``."""
        return time_ms - time_ms % self.ms


_INTERVAL_MS = {
    "1s": 1_000,
    "1m": 60_000,
    "5m": 300_000,
    "15m": 900_000,
    "1h": 3_600_000,
    "1d": 86_400_000,
}


class QualityFlag(StrEnum):
    """Known values of ``PriceUpdate.flags``; the field stays ``list[str]`` so new flags are
    not a schema change."""

    SINGLE_SOURCE = "single_source"
    STALE = "stale"
    OUTLIERS_REJECTED = "outliers_rejected"
    LOW_CONFIDENCE = "low_confidence"
    WIDE_SPREAD = "wide_spread"


class _Record(BaseModel):
    # Every key is written, defaults included: the JSON Schemas (serialization mode) list each
    # one as required, which is what a reader can rely on.
    model_config = ConfigDict(
        frozen=True, extra="forbid", json_schema_serialization_defaults_required=True
    )

    v: int = Field(default=SCHEMA_VERSION, strict=True, ge=1, description="schema version")

    #: The seed's keys of this record and how each is derived (docs/WEBSOCKET.md, "Data
    #: items"). Their field defaults are placeholders: ``_seed_keys`` fills a missing one from
    #: the other fields, and ``_seed_keys_agree`` refuses a record whose copy disagrees.
    derived: ClassVar[dict[str, Derive]] = {}

    @model_validator(mode="before")
    @classmethod
    def _seed_keys(cls, data: object) -> object:
        if not cls.derived or not isinstance(data, dict):
            return data
        missing: dict[str, object] = {}
        for key, derive in cls.derived.items():
            if key not in data:
                # bad inputs are left to their own fields' validation, which names them
                with contextlib.suppress(KeyError, TypeError, ValueError, ArithmeticError):
                    missing[key] = derive(data)
        return {**data, **missing} if missing else data

    @model_validator(mode="after")
    def _seed_keys_agree(self) -> Self:
        for key, derive in self.derived.items():
            expected, value = derive(self.__dict__), getattr(self, key)
            if value != expected:
                raise ValueError(
                    f"{key} must be {expected!r} (derived from the other fields), got {value!r}"
                )
        return self


def price_change(price: float, day_open: float) -> tuple[float, float]:
    """``(change, change_percent)`` of ``price`` against the day's open: the one definition,
    used by the arbitration worker and checked by ``PriceUpdate``."""
    change = price - day_open
    return change, change / day_open * 100.0


Derive = Callable[[Mapping[str, Any]], object]
"""How one of the seed's keys is computed from a record's other fields (a mapping of them)."""


def _iso_of(key: str) -> Derive:
    return lambda fields: iso_ms(fields[key])


def _copy_of(key: str) -> Derive:
    return lambda fields: fields[key]


_HISTORY = (
    "recorded history (a replay, a backfill): exempt from the live age bound, and it "
    "never moves the live watermark (agents/timebounds.py)"
)


class RawTick(_Record):
    """One quote/last-price observation from one provider (topic ``fiml.raw``)."""

    provider: Name
    symbol: Name = Field(description="canonical symbol, see schemas.symbols")
    provider_symbol: Name = Field(description="the symbol as the provider spells it")
    asset_type: AssetType
    market: str | None = None
    price: Price = Field(description="last traded or reference price")
    bid: Price | None = None
    ask: Price | None = None
    bid_size: Size | None = None
    ask_size: Size | None = None
    volume: Size | None = Field(default=None, description="24h or cumulative, as the provider")
    event_time_ms: EpochMs
    ingest_time_ms: EpochMs
    seq: Count = Field(description="per-provider sequence number, increasing")
    history: bool = Field(default=False, strict=True, description=_HISTORY)


class RawTrade(_Record):
    """One trade reported by one provider (topic ``fiml.raw``; its ``trade_id`` tells it from a
    tick)."""

    provider: Name
    symbol: Name
    provider_symbol: Name
    asset_type: AssetType
    market: str | None = None
    trade_id: Name
    price: Price
    amount: Size
    side: Side | None = None
    event_time_ms: EpochMs
    ingest_time_ms: EpochMs
    seq: Count
    history: bool = Field(default=False, strict=True, description=_HISTORY)


class ProviderHealth(_Record):
    """A provider's state and measured quality (compacted topic ``fiml.provider.health``)."""

    provider: Name
    state: Literal["up", "degraded", "down"]
    symbol: str | None = Field(default=None, description="set when the health is per symbol")
    reason: str | None = None
    event_time_ms: EpochMs
    reliability: Unit | None = None
    error_bps: Size | None = Field(default=None, description="error vs consensus, basis points")
    staleness_ms: Size | None = None
    ticks: Count | None = None
    errors: Count | None = None


class PriceUpdate(_Record):
    """The arbitrated price of one symbol (topic ``fiml.prices``)."""

    symbol: Name
    asset_type: AssetType
    price: Price
    confidence: Unit
    band_low: Price
    band_high: Price
    providers_used: list[str]
    providers_rejected: list[str] = Field(default_factory=list)
    flags: list[str] = Field(default_factory=list, description="see QualityFlag")
    event_time_ms: EpochMs
    source_ticks: Count
    # The seed's keys (docs/WEBSOCKET.md, "Data items").
    timestamp: IsoTime = Field(default="", description="event_time_ms as ISO 8601")
    provider: Name = Field(description="the provider used whose price is nearest the consensus")
    day_open: Price = Field(description="the open of the symbol's UTC day (its 1d candle)")
    change: Finite = Field(default=0.0, description="price - day_open")
    change_percent: Finite = Field(default=0.0, description="100 * change / day_open")
    volume: Size | None = Field(
        default=None,
        description="the UTC day's traded volume (its 1d candle); null until a "
        "trade of the day is seen",
    )
    bid: Price | None = Field(
        default=None,
        description="the consensus best bid at this price's event time (fiml.quotes "
        "samples it at most every FIML_ARB_QUOTE_MS); null when no provider used quotes one",
    )
    ask: Price | None = Field(default=None, description="the consensus best ask, as bid")
    derived = {
        "timestamp": _iso_of("event_time_ms"),
        "change": lambda f: price_change(f["price"], f["day_open"])[0],
        "change_percent": lambda f: price_change(f["price"], f["day_open"])[1],
    }

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        # A band that does not contain its price is a bug upstream, not a market condition.
        if not self.band_low <= self.price <= self.band_high:
            raise ValueError("band_low <= price <= band_high does not hold")
        if self.provider not in self.providers_used:
            raise ValueError("provider must be one of providers_used")
        return self


class QuoteUpdate(_Record):
    """Consensus best bid and ask of one symbol (topic ``fiml.quotes``)."""

    symbol: Name
    bid: Price
    ask: Price
    bid_size: Size | None = None
    ask_size: Size | None = None
    providers: list[str]
    event_time_ms: EpochMs
    # The seed's keys.
    spread: Finite = Field(default=0.0, description="ask - bid")
    timestamp: IsoTime = Field(default="", description="event_time_ms as ISO 8601")
    derived = {"spread": lambda f: f["ask"] - f["bid"], "timestamp": _iso_of("event_time_ms")}


class TradeUpdate(_Record):
    """A normalised trade (topic ``fiml.trades``)."""

    symbol: Name
    trade_id: Name
    price: Price
    amount: Size
    side: Side | None = None
    providers: list[str]
    event_time_ms: EpochMs
    # The seed's keys.
    quantity: Size = Field(default=0.0, description="the same as amount")
    timestamp: IsoTime = Field(default="", description="event_time_ms as ISO 8601")
    derived = {"quantity": _copy_of("amount"), "timestamp": _iso_of("event_time_ms")}


class OHLCVUpdate(_Record):
    """One revision of a candle (topic ``fiml.ohlcv``); ``is_final`` closes the window."""

    symbol: Name
    interval: Interval
    window_start_ms: EpochMs
    window_end_ms: EpochMs = Field(description="exclusive: window_start_ms + interval.ms")
    open: Price
    high: Price
    low: Price
    close: Price
    volume: Size
    trade_count: Count
    rev: Count = Field(description="revision number within the window, increasing")
    is_final: bool = Field(strict=True)
    event_time_ms: EpochMs
    # The seed's keys.
    timestamp: IsoTime = Field(
        default="", description="window_start_ms as ISO 8601 (the candle's start)"
    )
    is_closed: bool = Field(default=False, strict=True, description="the same as is_final")
    derived = {"timestamp": _iso_of("window_start_ms"), "is_closed": _copy_of("is_final")}

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.window_start_ms % self.interval.ms:
            raise ValueError("window_start_ms is not aligned to the interval")
        if self.window_end_ms != self.window_start_ms + self.interval.ms:
            raise ValueError("window_end_ms must be window_start_ms + the interval length")
        if not self.low <= min(self.open, self.close) <= max(self.open, self.close) <= self.high:
            raise ValueError("low <= open, close <= high does not hold")
        return self


Record = RawTick | RawTrade | ProviderHealth | PriceUpdate | QuoteUpdate | TradeUpdate | OHLCVUpdate

#: Every topic record model, in the order of ``Record``: codecs and schema export iterate this.
RECORD_MODELS: tuple[type[BaseModel], ...] = (
    RawTick,
    RawTrade,
    ProviderHealth,
    PriceUpdate,
    QuoteUpdate,
    TradeUpdate,
    OHLCVUpdate,
)
