"""FIML Stream's contracts: topic records, WebSocket messages, codecs, symbols and topics.

This package imports nothing else from the project, so every other part can depend on it.
Import from here (``from schemas import RawTick, decode``) or from the submodules; both are
public. ``schemas.symbols`` is kept as a namespace (``symbols.to_yfinance(...)``).
"""

from schemas import symbols
from schemas.codec import RECORD_TYPES, data_frame, decode, encode, encode_many
from schemas.errors import DecodeError, ProtocolError, SchemaError, SymbolError
from schemas.protocol import (
    MAX_SYMBOLS,
    ClientMessage,
    DataMessage,
    ErrorCode,
    ErrorMessage,
    Heartbeat,
    ReplayComplete,
    ServerMessage,
    StreamType,
    SubscribeRequest,
    SubscriptionAck,
    UnsubscribeAck,
    UnsubscribeRequest,
    parse_client_message,
)
from schemas.records import (
    AssetType,
    Interval,
    OHLCVUpdate,
    PriceUpdate,
    ProviderHealth,
    QualityFlag,
    QuoteUpdate,
    RawTick,
    RawTrade,
    Record,
    Side,
    TradeUpdate,
)
from schemas.topics import TOPICS, TopicSpec, topic_name

__all__ = [
    "MAX_SYMBOLS",
    "RECORD_TYPES",
    "TOPICS",
    "AssetType",
    "ClientMessage",
    "DataMessage",
    "DecodeError",
    "ErrorCode",
    "ErrorMessage",
    "Heartbeat",
    "Interval",
    "OHLCVUpdate",
    "PriceUpdate",
    "ProtocolError",
    "ProviderHealth",
    "QualityFlag",
    "QuoteUpdate",
    "RawTick",
    "RawTrade",
    "Record",
    "ReplayComplete",
    "SchemaError",
    "ServerMessage",
    "Side",
    "StreamType",
    "SubscribeRequest",
    "SubscriptionAck",
    "SymbolError",
    "TopicSpec",
    "TradeUpdate",
    "UnsubscribeAck",
    "UnsubscribeRequest",
    "data_frame",
    "decode",
    "encode",
    "encode_many",
    "parse_client_message",
    "symbols",
    "topic_name",
]
