"""Which topic and which keys a subscription reads: pure mapping, no I/O.

A *channel* is the unit of fan-out and of the last-value cache: one logical topic, one
canonical symbol and, for candles, one interval (``("fiml.ohlcv", "BTC/USDT", "1m")``). Every
record read from Kafka belongs to exactly one channel, and every subscription lists the
channels it wants; the hub matches the two with one dict lookup per record.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any

import orjson

from schemas import symbols as symbol_forms
from schemas.codec import RECORD_TYPES
from schemas.errors import DecodeError, ProtocolError, SymbolError
from schemas.protocol import ErrorCode, StreamType, SubscribeRequest
from schemas.records import AssetType, Interval

__all__ = [
    "Channel",
    "StreamSpec",
    "parse_slice",
    "record_keys",
    "resolve",
    "resolve_symbol",
    "route",
    "route_parsed",
]

Channel = tuple[str, str, str]
"""``(logical topic, canonical symbol, variant)``; variant is the candle interval or ``""``."""

_TOPIC_OF: dict[StreamType, str] = {
    StreamType.PRICE: "fiml.prices",
    StreamType.QUOTE: "fiml.quotes",
    StreamType.TRADES: "fiml.trades",
    StreamType.OHLCV: "fiml.ohlcv",
    # multi_asset is the seed's "prices of several asset types at once": same topic, and the
    # asset_type check is skipped.
    StreamType.MULTI_ASSET: "fiml.prices",
}
_RAW_TOPIC = "fiml.raw"
DEFAULT_CANDLE_INTERVAL = Interval.M1


@dataclass(frozen=True, slots=True)
class StreamSpec:
    """A validated subscription target."""

    stream_type: StreamType
    topic: str  # logical name, see schemas.topics
    symbols: tuple[str, ...]
    variant: str

    @property
    def channels(self) -> tuple[Channel, ...]:
        return tuple((self.topic, s, self.variant) for s in self.symbols)

    @property
    def raw(self) -> bool:
        """The raw log (providers' own ticks and trades), entitled apart."""
        return self.topic == _RAW_TOPIC

    @property
    def batched(self) -> bool:
        """Trades (and raw ticks) are batched, never conflated: each one is an event."""
        return self.topic in ("fiml.trades", _RAW_TOPIC)


def resolve_symbol(raw: str, asset_type: AssetType | None = None) -> str:
    """Canonical form of a client's symbol: canonical (``BTC/USDT``) or URL (``BTC_USDT``).

    Raises:
        SymbolError: neither form, or not of ``asset_type``.
    """
    try:
        return symbol_forms.normalize(raw, asset_type)
    except SymbolError as first:
        try:
            canonical = symbol_forms.from_url(raw)
        except SymbolError:
            raise first from None
        return symbol_forms.normalize(canonical, asset_type)


def _asset_filter(request: SubscribeRequest) -> AssetType | None:
    # Seed clients send asset types we do not model ("etf", "forex"): those are not checked.
    if request.stream_type is StreamType.MULTI_ASSET or request.asset_type is None:
        return None
    try:
        return AssetType(request.asset_type.lower())
    except ValueError:
        return None


def _variant(stream_type: StreamType, params: dict[str, Any]) -> str:
    if stream_type is not StreamType.OHLCV:
        return ""
    raw = params.get("interval", DEFAULT_CANDLE_INTERVAL.value)
    try:
        return Interval(raw).value
    except ValueError:
        allowed = ", ".join(i.value for i in Interval)
        raise ProtocolError(
            ErrorCode.SUBSCRIPTION_ERROR,
            f"unknown candle interval {raw!r}; expected one of {allowed}",
            "params.interval",
        ) from None


def resolve(request: SubscribeRequest, live_topics: tuple[str, ...]) -> StreamSpec:
    """The topic, symbols and variant a subscribe request asks for.

    Raises:
        ProtocolError: ``UNKNOWN_SYMBOL`` naming the first bad symbol (``symbols.<i>``);
            ``SUBSCRIPTION_ERROR`` for a bad ``params`` entry or a topic this gateway does not
            serve.
    """
    params = request.params
    source = params.get("source", "derived")
    if source not in ("derived", "raw"):
        raise ProtocolError(
            ErrorCode.SUBSCRIPTION_ERROR,
            f"unknown source {source!r}; expected 'derived' or 'raw'",
            "params.source",
        )
    if source == "raw" and request.stream_type not in (StreamType.PRICE, StreamType.MULTI_ASSET):
        raise ProtocolError(
            ErrorCode.SUBSCRIPTION_ERROR,
            "source 'raw' (raw provider ticks) is available for stream_type 'price' only",
            "params.source",
        )
    topic = _RAW_TOPIC if source == "raw" else _TOPIC_OF[request.stream_type]
    if topic not in live_topics and request.replay_from is None:
        raise ProtocolError(
            ErrorCode.SUBSCRIPTION_ERROR,
            f"this gateway does not stream {topic} live; ask for a replay (replay_from)",
            "params.source" if source == "raw" else "stream_type",
        )
    wanted = _asset_filter(request)
    canonical: list[str] = []
    for index, raw in enumerate(request.symbols):
        try:
            canonical.append(resolve_symbol(raw, wanted))
        except SymbolError as exc:
            raise ProtocolError(
                ErrorCode.UNKNOWN_SYMBOL,
                f"unknown symbol {raw!r}: {exc.reason}",
                f"symbols.{index}",
            ) from None
    return StreamSpec(
        stream_type=request.stream_type,
        topic=topic,
        symbols=tuple(dict.fromkeys(canonical)),
        variant=_variant(request.stream_type, params),
    )


_INTERVALS = frozenset(i.value for i in Interval)
#: Every key of each topic's record (writers write every key, nulls included): a record that
#: lacks one is not forwarded, so a client reading a documented key never meets a KeyError.
#: Derived topics only: raw ticks (``params.source: "raw"``) are the event log as written, v1
#: records included.
_KEY_ORDER: dict[str, tuple[str, ...]] = {
    topic: tuple(RECORD_TYPES[topic].model_fields)
    for topic in ("fiml.prices", "fiml.quotes", "fiml.trades", "fiml.ohlcv")
}
# Looking every key up at once in C (a KeyError if one is missing) is a third cheaper than a
# subset test of the key sets, and this runs for every record the hub and every replay read.
_HAS_KEYS: dict[str, operator.itemgetter[Any]] = {
    topic: operator.itemgetter(*keys) for topic, keys in _KEY_ORDER.items()
}


def record_keys(topic: str) -> tuple[str, ...] | None:
    """The keys every record ``route`` passes on ``topic`` has, in the writers' order (None for
    the raw log, whose v1 records lack some)."""
    return _KEY_ORDER.get(topic)


def route(topic: str, payload: bytes) -> tuple[Channel, dict[str, Any]]:
    """The channel of a record read from ``topic`` (logical name), and the record as parsed.

    The hub forwards the bytes as they are, so it checks what routes them, a JSON object
    with a non-empty ``symbol`` (and, on ``fiml.ohlcv``, a known ``interval``), and that every
    key of the topic's record is there; not their types. The records were validated against
    their schema by whoever wrote them (ingestion, the arbitration worker); a full pydantic
    decode here cost about a quarter of the gateway's CPU at 1,000 ticks/s.

    Raises:
        DecodeError: the bytes are not JSON, not an object, or lack those fields or keys
            (v1 records, which lack the seed's keys, among them).
    """
    try:
        record = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise DecodeError(f"not JSON: {exc}") from None
    return route_parsed(topic, record), record


def route_parsed(topic: str, record: Any) -> Channel:
    """``route`` of a record already parsed (a replay parses a slice of records at once).

    Raises:
        DecodeError: as ``route``, but for the parse.
    """
    if not isinstance(record, dict):
        raise DecodeError(f"expected a JSON object, got {type(record).__name__}")
    symbol = record.get("symbol")
    if not isinstance(symbol, str) or not symbol:
        raise DecodeError("no symbol", "symbol")
    variant = ""
    if topic == "fiml.ohlcv":
        interval = record.get("interval")
        if not isinstance(interval, str) or interval not in _INTERVALS:  # a list: unhashable
            raise DecodeError(f"unknown interval {interval!r}", "interval")
        variant = interval
    elif topic == _RAW_TOPIC and "trade_id" in record:
        # The event log holds trades beside ticks; the raw source streams ticks, so a trade
        # goes to a channel no subscription has (not an error, not forwarded).
        variant = "trade"
    has_keys = _HAS_KEYS.get(topic)
    if has_keys is not None:
        try:
            has_keys(record)
        except KeyError:
            missing = [k for k in _KEY_ORDER[topic] if k not in record]
            raise DecodeError(
                f"not a {RECORD_TYPES[topic].__name__}: no {', '.join(missing)}", missing[0]
            ) from None
    return topic, symbol, variant


def parse_slice(values: list[bytes | None]) -> list[Any]:
    """Kafka values as parsed JSON, None for a value that is not JSON (``route_parsed`` then
    refuses it as not an object). One ``orjson.loads`` each: parsing a slice joined in one
    call is a third cheaper, but a malformed value can then shift its neighbours onto the
    wrong records (``[b'{"x":[1', b'2]}', b'{"a":1},{"b":2}']`` parses as three values)."""
    return [_loads_or_none(v) for v in values]


def _loads_or_none(value: bytes | None) -> Any:
    try:
        return None if value is None else orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
