"""Bytes <-> records, in one pass, plus the fast path the gateway uses for ``data`` frames.

Encoding uses the model's own Rust serializer and decoding ``model_validate_json``: both parse
or write JSON in a single pass without building an intermediate dict. Measured against orjson
(``orjson.dumps(model_dump())`` and ``model_validate(orjson.loads(...))``) on a 2-core machine,
best of 9 x 50k (docs/SCHEMAS.md has the table), pydantic's path was faster for both RawTick and
PriceUpdate (encode ~1.6 us vs ~2.8 us, decode ~3.4-4.0 us vs ~5.0-5.4 us), so it is the one
way here. Both write floats in the shortest form that round-trips: prices are never rounded.

``data_frame`` is the fan-out fast path: the gateway keeps each record's encoded bytes (as read
from Kafka, or encoded once) and splices them into every client's frame, so a record is
serialised once however many clients receive it.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

import orjson
import ormsgpack
from pydantic import BaseModel, ValidationError

from schemas import records
from schemas.errors import DecodeError
from schemas.times import iso_ms
from schemas.topics import TOPICS

__all__ = [
    "RECORD_TYPES",
    "columns_of",
    "data_frame",
    "data_frame_msgpack",
    "decode",
    "decode_raw",
    "encode",
    "encode_many",
    "parse_many",
]

M = TypeVar("M", bound=BaseModel)

_MODELS: dict[str, type[BaseModel]] = {cls.__name__: cls for cls in records.RECORD_MODELS}

#: Topic logical name (as in ``schemas.topics.TOPICS``) -> model of its values. Derived from the
#: registry so the two cannot disagree; topics whose values are not records (the dead-letter
#: topic) are absent.
RECORD_TYPES: dict[str, type[BaseModel]] = {
    name: _MODELS[spec.value] for name, spec in TOPICS.items() if spec.value in _MODELS
}


def encode(record: BaseModel) -> bytes:
    """The record as compact JSON bytes (UTF-8), fields in declaration order."""
    return type(record).__pydantic_serializer__.to_json(record)


def encode_many(items: Iterable[BaseModel]) -> list[bytes]:
    """``encode`` for each record; a convenience for batch producers."""
    return [encode(record) for record in items]


def decode(model_cls: type[M], data: bytes | bytearray | memoryview | str) -> M:
    """Parse and validate ``data`` as a ``model_cls`` in one pass.

    Raises:
        DecodeError: the bytes are not JSON, or not a valid ``model_cls``; its ``field`` names
            the offending field when there is one.
    """
    if isinstance(data, memoryview):
        data = data.tobytes()
    try:
        return model_cls.model_validate_json(data)
    except ValidationError as exc:
        raise DecodeError.from_validation_error(exc) from None


def decode_raw(data: bytes) -> records.RawTick | records.RawTrade:
    """A record of the event log (``fiml.raw``, ticks and trades in one topic): a RawTrade if
    it has a ``trade_id`` key, else a RawTick.

    The key is looked for in the bytes (a JSON parse to look costs as much as the decode); a
    tick whose string value happens to be ``"trade_id"`` fails as a trade and is read as the
    tick it is.

    Raises:
        DecodeError: the bytes are neither a valid RawTrade nor a valid RawTick (the error is
            the one of the model the bytes look like).
    """
    if b'"trade_id"' not in data:
        return decode(records.RawTick, data)
    try:
        return decode(records.RawTrade, data)
    except DecodeError as as_trade:
        try:
            return decode(records.RawTick, data)
        except DecodeError:
            raise as_trade from None


def parse_many(items: Sequence[bytes]) -> list[Any]:
    """Records already known to be one JSON value each (``encode``'s, or passed by the
    gateway's ``route``) as Python values, in one parse: a third cheaper than one
    ``orjson.loads`` each.

    Not a validator: items are joined with commas, so bad items may parse as a different list.
    A count that does not match (``b'1,2'`` as one item) is caught; ``[b'{"a":1', b'"b":2}']``
    parses as one object, and raises only because the counts differ.

    Raises:
        orjson.JSONDecodeError: the joined items are not JSON, or not ``len(items)`` values.
    """
    parsed: list[Any] = orjson.loads(b"[" + b",".join(items) + b"]")
    if len(parsed) != len(items):
        raise orjson.JSONDecodeError("an item is not exactly one JSON value", "", 0)
    return parsed


def columns_of(records: list[dict[str, Any]], keys: tuple[str, ...] | None) -> dict[str, list[Any]]:
    """``records`` as columns: key -> the list of each record's value (None where a record
    lacks the key), every list as long as ``records``.

    ``keys`` are the keys every record is known to have (a derived topic's model's, which
    ``gateway.channels.route`` checked); a record with more keys than that, or ``keys`` None,
    makes the columns the union of all the records' keys, in order of first appearance.
    """
    if keys is not None and all(len(r) == len(keys) for r in records):
        # itemgetter maps in C: a third cheaper than a comprehension (a column per key)
        return {k: list(map(operator.itemgetter(k), records)) for k in keys}
    union = dict.fromkeys(k for r in records for k in r)
    return {k: [r.get(k) for r in records] for k in union}


def data_frame_msgpack(
    stream_type: str,
    subscription_id: str,
    columns: dict[str, list[Any]],
    count: int,
    timestamp_ms: int,
    seq: int,
    resume_token: str | None = None,
) -> bytes:
    """``data_frame``'s message as one msgpack map (a binary frame, docs/WEBSOCKET.md "Binary
    frames"): the same keys, except that the records come as ``columns`` (``columns_of``) of
    ``count`` values each instead of a ``data`` list. Columns make the frame about a third of
    the JSON one and twice as fast to decode: no map per record."""
    return ormsgpack.packb(
        {
            "type": "data",
            "stream_type": stream_type,
            "subscription_id": subscription_id,
            "count": count,
            "columns": columns,
            "timestamp": iso_ms(timestamp_ms),
            "timestamp_ms": int(timestamp_ms),
            "seq": int(seq),
            "metadata": {},
            "resume_token": resume_token,
        }
    )


def data_frame(
    stream_type: str,
    subscription_id: str,
    items: Sequence[bytes],
    timestamp_ms: int,
    seq: int,
    resume_token: str | None = None,
) -> bytes:
    """A WebSocket ``data`` message (see ``schemas.protocol.DataMessage``) from encoded records.

    ``items`` must each be one JSON value as produced by ``encode`` (or read from a topic); they
    are spliced in, not re-parsed. The result decodes to the same ``DataMessage`` as building
    the model and encoding it, at a fraction of the cost (docs/SCHEMAS.md).
    """
    return b"".join(
        (
            b'{"type":"data","stream_type":',
            orjson.dumps(stream_type),
            b',"subscription_id":',
            orjson.dumps(subscription_id),
            b',"data":[',
            b",".join(items),
            b'],"timestamp":"',
            iso_ms(timestamp_ms).encode(),
            b'","timestamp_ms":',
            str(int(timestamp_ms)).encode(),
            b',"seq":',
            str(int(seq)).encode(),
            b',"metadata":{},"resume_token":',
            orjson.dumps(resume_token),
            b"}",
        )
    )
