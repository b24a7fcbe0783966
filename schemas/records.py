"""Pydantic models of every Kafka topic record: one model per concept, defined once.

Conventions every record follows (other parts code against them):

* ``v`` is the schema version (see docs/SCHEMAS.md for when it changes; now ``SCHEMA_VERSION``).
* Times are **integer milliseconds since the Unix epoch, UTC**. Integers keep arbitration
  deterministic (no float drift, no time zones) and compare fast. ``event_time_ms`` is the
  provider's time for the event; ``ingest_time_ms`` is when ingestion received it.
* The derived records also carry the FIML seed's keys (``timestamp`` as ISO 8601, ``change``,
  ``is_closed``, ``spread``, ``quantity`` ...), so that a seed client reads them unmodified.
  Each is a function of the record's other fields, defined once here: a model's ``_seed_keys``
  step fills them when a producer leaves them out (their defaults are placeholders it always
  replaces), and ``_consistent`` refuses a record whose copy disagrees.
* Prices are finite floats > 0 and sizes finite floats >= 0, stored exactly as given: nothing
  here rounds, and JSON encoding uses the shortest representation that round-trips.
* Models are frozen and forbid unknown keys, so a typo in a producer fails loudly.
* Numbers are strict: ``"1.5"`` (a string) is not a price and ``1.0`` is not an ``int``.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal, Self

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
IsoTime = Annotated[str, Field(
    pattern=r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$",
    description="ISO 8601 UTC with milliseconds, the seed's form (2026-12-04T03:09:22.700Z)",
)]
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


def price_change(price: float, day_open: float) -> tuple[float, float]:
    """``(change, change_percent)`` of ``price`` against the day's open: the one definition,
    used by the arbitration worker and checked by ``PriceUpdate``."""
    change = price - day_open
    return change, change / day_open * 100.0


def _fill(data: object, derived: dict[str, object]) -> object:
    """``data`` with each missing key of ``derived`` added (a model's "before" step)."""
    if not isinstance(data, dict):
        return data
    missing = {k: v for k, v in derived.items() if k not in data}
    return {**data, **missing} if missing else data


def _time_iso(data: object, key: str) -> str | None:
    t = data.get(key) if isinstance(data, dict) else None
    if isinstance(t, int) and not isinstance(t, bool) and 0 <= t <= MAX_EPOCH_MS:
        return iso_ms(t)
    return None  # left out: the field's own validation names the problem


def _check(name: str, value: object, expected: object) -> None:
    if value != expected:
        raise ValueError(f"{name} must be {expected!r} (derived from the other fields), "
                         f"got {value!r}")


class RawTick(_Record):
    """One quote/last-price observation from one provider (topic ``fiml.raw.ticks``)."""

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


class RawTrade(_Record):
    """One trade reported by one provider (topic ``fiml.raw.trades``)."""

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
        default=None, description="the UTC day's traded volume (its 1d candle); null until a "
        "trade of the day is seen")

    @model_validator(mode="before")
    @classmethod
    def _seed_keys(cls, data: object) -> object:
        derived: dict[str, object] = {}
        if (iso := _time_iso(data, "event_time_ms")) is not None:
            derived["timestamp"] = iso
        price = data.get("price") if isinstance(data, dict) else None
        day_open = data.get("day_open") if isinstance(data, dict) else None
        if isinstance(price, float) and isinstance(day_open, float) and day_open > 0:
            derived["change"], derived["change_percent"] = price_change(price, day_open)
        return _fill(data, derived)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        # A band that does not contain its price is a bug upstream, not a market condition.
        if not self.band_low <= self.price <= self.band_high:
            raise ValueError("band_low <= price <= band_high does not hold")
        if self.provider not in self.providers_used:
            raise ValueError("provider must be one of providers_used")
        _check("timestamp", self.timestamp, iso_ms(self.event_time_ms))
        change, percent = price_change(self.price, self.day_open)
        _check("change", self.change, change)
        _check("change_percent", self.change_percent, percent)
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

    @model_validator(mode="before")
    @classmethod
    def _seed_keys(cls, data: object) -> object:
        derived: dict[str, object] = {}
        if (iso := _time_iso(data, "event_time_ms")) is not None:
            derived["timestamp"] = iso
        if isinstance(data, dict):
            bid, ask = data.get("bid"), data.get("ask")
            if isinstance(bid, float) and isinstance(ask, float):
                derived["spread"] = ask - bid
        return _fill(data, derived)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        _check("spread", self.spread, self.ask - self.bid)
        _check("timestamp", self.timestamp, iso_ms(self.event_time_ms))
        return self


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

    @model_validator(mode="before")
    @classmethod
    def _seed_keys(cls, data: object) -> object:
        derived: dict[str, object] = {}
        if (iso := _time_iso(data, "event_time_ms")) is not None:
            derived["timestamp"] = iso
        if isinstance(data, dict) and "amount" in data:
            derived["quantity"] = data["amount"]
        return _fill(data, derived)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        _check("quantity", self.quantity, self.amount)
        _check("timestamp", self.timestamp, iso_ms(self.event_time_ms))
        return self


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
        default="", description="window_start_ms as ISO 8601 (the candle's start)")
    is_closed: bool = Field(default=False, strict=True, description="the same as is_final")

    @model_validator(mode="before")
    @classmethod
    def _seed_keys(cls, data: object) -> object:
        derived: dict[str, object] = {}
        if (iso := _time_iso(data, "window_start_ms")) is not None:
            derived["timestamp"] = iso
        if isinstance(data, dict) and "is_final" in data:
            derived["is_closed"] = data["is_final"]
        return _fill(data, derived)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        _check("timestamp", self.timestamp, iso_ms(self.window_start_ms))
        _check("is_closed", self.is_closed, self.is_final)
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
