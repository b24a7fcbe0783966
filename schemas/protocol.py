"""The WebSocket protocol: client and server messages, and validation of client input.

Compatible with the FIML seed: every seed message is accepted as it was, unknown keys in client
messages are ignored, and the additions (replay, snapshot, mode, resume) are optional. Server
messages forbid unknown keys so the gateway cannot drift from the documented contract.
``parse_client_message`` does no I/O; the gateway turns its ``ProtocolError`` into an
``ErrorMessage`` and the connection stays usable.
"""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any, Literal, Self

import orjson
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from schemas.errors import ProtocolError, summarize
from schemas.records import (
    IsoTime,
    OHLCVUpdate,
    PriceUpdate,
    QuoteUpdate,
    RawTick,
    RawTrade,
    TradeUpdate,
)
from schemas.times import MAX_EPOCH_MS, iso_ms, parse_iso_ms

__all__ = [
    "MAX_SYMBOLS",
    "AuthRequest",
    "ClientMessage",
    "DataMessage",
    "ErrorCode",
    "ErrorMessage",
    "Heartbeat",
    "HelloRequest",
    "ReplayComplete",
    "ServerMessage",
    "StatusMessage",
    "StreamType",
    "SubscribeRequest",
    "SubscriptionAck",
    "UnsubscribeAck",
    "UnsubscribeRequest",
    "Welcome",
    "WireFormat",
    "parse_client_message",
]

MAX_SYMBOLS = 50


class StreamType(StrEnum):
    """What a subscription streams."""

    PRICE = "price"
    OHLCV = "ohlcv"
    QUOTE = "quote"
    TRADES = "trades"
    MULTI_ASSET = "multi_asset"


class ErrorCode(StrEnum):
    """``error_code`` of an ``ErrorMessage``."""

    # The seed's four codes first, unchanged.
    INVALID_JSON = "INVALID_JSON"
    INVALID_MESSAGE_TYPE = "INVALID_MESSAGE_TYPE"
    SUBSCRIPTION_ERROR = "SUBSCRIPTION_ERROR"
    PROCESSING_ERROR = "PROCESSING_ERROR"
    TOO_MANY_SUBSCRIPTIONS = "TOO_MANY_SUBSCRIPTIONS"
    UNKNOWN_SYMBOL = "UNKNOWN_SYMBOL"
    UNKNOWN_SUBSCRIPTION = "UNKNOWN_SUBSCRIPTION"
    RESUME_UNAVAILABLE = "RESUME_UNAVAILABLE"
    REPLAY_ERROR = "REPLAY_ERROR"
    #: The gateway wants credentials first (an ``auth`` message, a header or ``?token=``).
    AUTH_REQUIRED = "AUTH_REQUIRED"
    #: The credentials are unknown, revoked, expired or malformed (which, is not said).
    AUTH_FAILED = "AUTH_FAILED"
    #: The key or token is not entitled to this stream, symbol, replay or source.
    FORBIDDEN = "FORBIDDEN"
    #: Over a published limit (docs/WEBSOCKET.md, "Limits"): messages a second, replays.
    RATE_LIMITED = "RATE_LIMITED"


def _to_epoch_ms(value: object) -> object:
    """Epoch ms (int) or an ISO-8601 datetime with an offset -> epoch ms; else left to pydantic."""
    return parse_iso_ms(value) if isinstance(value, str) else value


def _clean_symbols(symbols: list[str]) -> list[str]:
    cleaned = [s.strip() for s in symbols]
    if any(not s for s in cleaned):
        raise ValueError("symbols must not be empty strings")
    return list(dict.fromkeys(cleaned))  # drop duplicates, keep the client's order


EpochMsIn = Annotated[int, BeforeValidator(_to_epoch_ms), Field(strict=True, ge=0, le=MAX_EPOCH_MS)]
Symbols = Annotated[
    list[Annotated[str, Field(max_length=64)]],
    Field(min_length=1, max_length=MAX_SYMBOLS),
    AfterValidator(_clean_symbols),
]
# Declared in each server model (not the base) so that ``type`` comes first on the wire.
Timestamp = Annotated[IsoTime, Field(description="server time, ISO 8601 UTC (the seed's form)")]
TimestampMs = Annotated[
    int, Field(strict=True, ge=0, le=MAX_EPOCH_MS, description="server time, UTC epoch ms")
]
SubscriptionId = Annotated[str, Field(min_length=1, max_length=128)]


class _Client(BaseModel):
    # Seed clients send extra keys; ignoring them keeps those clients working.
    model_config = ConfigDict(frozen=True, extra="ignore")


class SubscribeRequest(_Client):
    """Client -> server: start a subscription (seed fields, plus replay, snapshot, mode, resume)."""

    type: Literal["subscribe"] = "subscribe"
    stream_type: StreamType
    symbols: Symbols
    asset_type: str | None = None
    market: str | None = None
    interval_ms: int = Field(default=1000, strict=True, ge=100, le=60_000)
    data_type: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    replay_from: EpochMsIn | None = Field(default=None, description="epoch ms or ISO-8601")
    replay_to: EpochMsIn | None = None
    replay_speed: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    snapshot: bool = Field(default=True, strict=True)
    mode: Literal["conflated", "realtime"] = "conflated"
    subscription_id: SubscriptionId | None = Field(default=None, description="client-chosen")
    resume_from: int | None = Field(
        default=None, strict=True, ge=0, le=2**53, description="last seq seen"
    )
    # validated even when absent, so that resume_from without it is named
    resume_token: str | None = Field(
        default=None,
        min_length=1,
        max_length=2_048,
        validate_default=True,
        description="of the last data message received (or of the ack, with resume_from 0)",
    )
    #: Also send ``status`` messages for the subscription's symbols (liveness), and the last
    #: event time of each subscription in heartbeats (docs/WEBSOCKET.md, "Liveness").
    status: bool = Field(default=False, strict=True)

    # Field validators (not a model validator) so that the error names the offending field;
    # fields are validated in declaration order, so the earlier ones are in ``info.data``.
    @field_validator("replay_to")
    @classmethod
    def _after_replay_from(cls, value: int | None, info: ValidationInfo) -> int | None:
        start = info.data.get("replay_from")
        if value is not None and start is None:
            raise ValueError("replay_to needs replay_from")
        if value is not None and start is not None and value <= start:
            raise ValueError("replay_to must be after replay_from")
        return value

    @field_validator("resume_from")
    @classmethod
    def _needs_subscription_id(cls, value: int | None, info: ValidationInfo) -> int | None:
        if value is not None and info.data.get("subscription_id") is None:
            raise ValueError("resume_from needs the subscription_id being resumed")
        return value

    @field_validator("resume_token")
    @classmethod
    def _with_resume_from(cls, value: str | None, info: ValidationInfo) -> str | None:
        if info.data.get("resume_from") is not None and value is None:
            raise ValueError("resume_from needs the resume_token of the message it names")
        return value


class AuthRequest(_Client):
    """Client -> server: credentials, an API key or a JWT, as the first message (or later, to
    refresh a token before it expires)."""

    type: Literal["auth"] = "auth"
    token: str = Field(min_length=1, max_length=4096)


#: How a connection's ``data`` messages are sent: JSON text frames (the seed's, the default)
#: or msgpack binary frames (docs/WEBSOCKET.md, "Binary frames"). Every other message stays a
#: JSON text frame either way.
WireFormat = Literal["json", "msgpack"]


class HelloRequest(_Client):
    """Client -> server: ask for the ``welcome`` message (who you are, the published limits).
    Nothing of it is sent unasked, so seed clients never see it. ``format`` switches the
    connection's data messages to that wire format from the next one on."""

    type: Literal["hello"] = "hello"
    format: WireFormat | None = None


class UnsubscribeRequest(_Client):
    """Client -> server: end a subscription, by id or in the seed's form.

    ``{"subscription_id": ...}`` ends that subscription. The seed's form, ``{"stream_type":
    ..., "symbols": [...]}`` without an id, ends every subscription of that stream type whose
    symbols are all among ``symbols`` (all of that stream type if ``symbols`` is omitted).
    """

    type: Literal["unsubscribe"] = "unsubscribe"
    stream_type: StreamType | None = None
    symbols: Symbols | None = None
    # Last, and validated even when absent, so that the check below sees the other fields and
    # its error names ``subscription_id``.
    subscription_id: SubscriptionId | None = Field(default=None, validate_default=True)

    @field_validator("subscription_id")
    @classmethod
    def _id_or_stream_type(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None and info.data.get("stream_type") is None:
            raise ValueError("unsubscribe needs subscription_id, or stream_type (and symbols)")
        return value


class _Server(BaseModel):
    """Every server message says when it was sent twice: ``timestamp`` (ISO 8601 with a ``Z``,
    as the seed) and ``timestamp_ms`` (epoch ms, for machines). Build one with
    ``timestamp_ms`` alone: ``timestamp`` is derived from it."""

    model_config = ConfigDict(
        frozen=True, extra="forbid", json_schema_serialization_defaults_required=True
    )
    if TYPE_CHECKING:  # declared by each message, after its ``type``
        timestamp: str
        timestamp_ms: int

    @model_validator(mode="before")
    @classmethod
    def _iso_timestamp(cls, data: object) -> object:
        if isinstance(data, dict) and "timestamp" not in data:
            ms = data.get("timestamp_ms")
            if isinstance(ms, int) and 0 <= ms <= MAX_EPOCH_MS:
                return {**data, "timestamp": iso_ms(ms)}
        return data

    @model_validator(mode="after")
    def _same_time(self) -> Self:
        timestamp_ms: int = self.timestamp_ms
        if self.timestamp != iso_ms(timestamp_ms):
            raise ValueError("timestamp must be timestamp_ms as ISO 8601")
        return self


class SubscriptionAck(_Server):
    """Server -> client: a subscription was accepted (or resumed)."""

    type: Literal["subscription_ack"] = "subscription_ack"
    timestamp: Timestamp = ""  # a placeholder: always derived from timestamp_ms
    timestamp_ms: TimestampMs
    subscription_id: str
    stream_type: StreamType
    symbols: list[str]
    interval_ms: int
    mode: Literal["conflated", "realtime"] = "conflated"
    replay: bool = False
    resumed_from: int | None = None
    #: The position before the first data message (``resume_from: 0``); each data message
    #: carries the next one. Only the same key or token subject, or an anonymous client when it
    #: was anonymous, can use it.
    resume_token: str | None = None


class UnsubscribeAck(_Server):
    """Server -> client: a subscription was ended."""

    type: Literal["unsubscribe_ack"] = "unsubscribe_ack"
    timestamp: Timestamp = ""  # a placeholder: always derived from timestamp_ms
    timestamp_ms: TimestampMs
    subscription_id: str


class DataMessage(_Server):
    """Server -> client: records of one subscription; ``seq`` increases by one per message."""

    type: Literal["data"] = "data"
    stream_type: StreamType
    subscription_id: str
    #: Derived records, or raw provider ticks/trades for ``params: {"source": "raw"}``.
    data: list[PriceUpdate | QuoteUpdate | TradeUpdate | OHLCVUpdate | RawTick | RawTrade]
    timestamp: Timestamp = ""  # a placeholder: always derived from timestamp_ms
    timestamp_ms: TimestampMs
    seq: int = Field(strict=True, ge=0, description="per-subscription sequence number")
    metadata: dict[str, Any] = Field(default_factory=dict, description="the seed's; empty")
    #: Resume right after this message, on any gateway (docs/WEBSOCKET.md, "Resume"); absent
    #: in a bounded replay.
    resume_token: str | None = None


class Heartbeat(_Server):
    """Server -> client: the connection is alive (every 30 s by default)."""

    type: Literal["heartbeat"] = "heartbeat"
    timestamp: Timestamp = ""  # a placeholder: always derived from timestamp_ms
    timestamp_ms: TimestampMs
    active_subscriptions: int = Field(ge=0)
    #: Only for connections with a ``status: true`` subscription (absent otherwise, so the
    #: seed's heartbeat is unchanged): subscription id -> the newest event time among its
    #: symbols' prices (null: none yet). A quiet market and a dead feed can then be told apart.
    subscriptions: dict[str, int | None] | None = Field(
        default=None, exclude_if=lambda value: value is None
    )


class StatusMessage(_Server):
    """Server -> client: a symbol's liveness, at subscribe and on each change, for
    subscriptions with ``status: true`` (docs/WEBSOCKET.md, "Liveness")."""

    type: Literal["status"] = "status"
    timestamp: Timestamp = ""  # a placeholder: always derived from timestamp_ms
    timestamp_ms: TimestampMs
    subscription_id: str
    symbol: str
    #: live: prices arrive within twice their expected interval; stale: none for longer (or
    #: none yet); recovering: arriving again after a stale spell
    status: Literal["live", "stale", "recovering"]
    last_event_time_ms: int | None = Field(description="event time of its newest price")
    expected_interval_ms: int | None = Field(description="learned time between its prices")
    #: each provider's state as the arbitration last published it (up, degraded, down)
    providers: dict[str, str] = Field(default_factory=dict)


class ErrorMessage(_Server):
    """Server -> client: a message was rejected or failed; the connection stays usable."""

    type: Literal["error"] = "error"
    timestamp: Timestamp = ""  # a placeholder: always derived from timestamp_ms
    timestamp_ms: TimestampMs
    error_code: ErrorCode
    message: str
    field: str | None = None
    subscription_id: str | None = None
    #: The same request may succeed if sent again after this long (ms); null: not as it is.
    retry_after_ms: int | None = None

    @classmethod
    def from_error(
        cls, exc: ProtocolError, timestamp_ms: int, subscription_id: str | None = None
    ) -> ErrorMessage:
        """The message to send back for a rejected client message."""
        return cls(
            timestamp_ms=timestamp_ms,
            error_code=exc.code,
            message=exc.message,
            field=exc.field,
            subscription_id=subscription_id,
            retry_after_ms=exc.retry_after_ms,
        )


class Welcome(_Server):
    """Server -> client: the answer to ``hello`` and to a successful ``auth``."""

    type: Literal["welcome"] = "welcome"
    timestamp: Timestamp = ""  # a placeholder: always derived from timestamp_ms
    timestamp_ms: TimestampMs
    authenticated: bool
    principal: str = Field(description="the key's or token's name; 'anonymous' without one")
    expires_at_ms: int | None = Field(default=None, description="when the credentials expire")
    limits: dict[str, int | float] = Field(description="docs/WEBSOCKET.md, 'Limits'")
    format: WireFormat = Field(default="json", description="how data messages are sent")


class ReplayComplete(_Server):
    """Server -> client: the requested history has been sent; live data may follow."""

    type: Literal["replay_complete"] = "replay_complete"
    timestamp: Timestamp = ""  # a placeholder: always derived from timestamp_ms
    timestamp_ms: TimestampMs
    subscription_id: str
    records: int = Field(ge=0, description="records replayed")


ClientMessage = SubscribeRequest | UnsubscribeRequest | AuthRequest | HelloRequest
ServerMessage = (
    SubscriptionAck
    | UnsubscribeAck
    | DataMessage
    | Heartbeat
    | ErrorMessage
    | ReplayComplete
    | Welcome
    | StatusMessage
)

_CLIENT_TYPES: dict[str, type[ClientMessage]] = {
    "subscribe": SubscribeRequest,
    "unsubscribe": UnsubscribeRequest,
    "auth": AuthRequest,
    "hello": HelloRequest,
}


def parse_client_message(raw: bytes | str) -> ClientMessage:
    """Validate one client frame.

    Raises:
        ProtocolError: ``INVALID_JSON`` if ``raw`` is not JSON; ``INVALID_MESSAGE_TYPE`` (field
            ``type``) if it is not an object or its ``type`` is missing or unknown;
            ``SUBSCRIPTION_ERROR`` with the offending field for any invalid field.
    """
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(ErrorCode.INVALID_JSON, f"invalid JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise ProtocolError(
            ErrorCode.INVALID_MESSAGE_TYPE, "a message must be a JSON object", "type"
        )
    kind = payload.get("type")
    model = _CLIENT_TYPES.get(kind) if isinstance(kind, str) else None
    if model is None:
        expected = ", ".join(_CLIENT_TYPES)
        raise ProtocolError(
            ErrorCode.INVALID_MESSAGE_TYPE,
            f"unknown message type {kind!r}; expected {expected}",
            "type",
        )
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        message, field = summarize(exc)
        raise ProtocolError(ErrorCode.SUBSCRIPTION_ERROR, message, field) from None
