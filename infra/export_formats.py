"""How a chunk of topic records becomes JSON Lines, CSV or Parquet (pure: no I/O).

``fiml replay`` (``infra.export``) hands over chunks of record values as read from Kafka (JSON
bytes). Python does as little as it can per record:

* JSON Lines: the values of a record topic are written as they are, joined by newlines. They
  are compact JSON objects already (every producer of a registry topic encodes a pydantic
  model). A check per chunk (``jsonl_block``, about 0.1 us a record) makes sure each value is
  one line starting with ``{`` and ending with ``}``; a chunk that fails (a tombstone, a value
  with a newline, a non-object) and every chunk of a topic outside the registry (the
  dead-letter topic holds arbitrary bytes) goes through ``objects_only``: orjson, record by
  record. Between the two, a value on a record topic that starts and ends like an object but
  is not valid JSON is written as it is: only FIML's own producers write those topics.
* CSV and Parquet: the chunk's values are parsed by Arrow's C++ JSON reader in one call
  (``parse_records``: the parse is the check), against one schema for the whole export: the
  topic's model's (``model_schema``), or, for a topic outside the registry, the first
  chunk's as Arrow infers it (``settled``). A chunk that fails goes through ``objects_only``
  too, and a record that does not fit the columns is left out (``fitting_only``).
"""

from __future__ import annotations

import types
import typing
from collections.abc import Sequence
from enum import Enum
from typing import Annotated, Any, Literal, Union, cast

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json
from pydantic import BaseModel

__all__ = [
    "META_FIELDS",
    "Unfit",
    "arrow_type",
    "conform",
    "csv_ready",
    "csv_schema",
    "fitting_only",
    "json_text",
    "jsonl_block",
    "meta_line",
    "model_schema",
    "objects_only",
    "parse_lines",
    "parse_records",
    "settled",
    "with_meta",
]

#: The columns ``--meta`` adds in front of a record's own, in this order (as before).
META_FIELDS = (
    pa.field("partition", pa.int32()),
    pa.field("offset", pa.int64()),
    pa.field("timestamp_ms", pa.int64()),
)

_STRING_LIST = pa.list_(pa.string())
_OPEN, _CLOSE, _NEWLINE = ord("{"), ord("}"), ord("\n")
_ONE_THREAD = pa_json.ReadOptions(use_threads=False)


class Unfit(Exception):
    """A field type ``model_schema`` has no Arrow column for (a new kind of field)."""


def arrow_type(annotation: Any) -> pa.DataType:
    """The Arrow type of a pydantic field annotation (constraints and ``None`` dropped:
    every Arrow column is nullable, and a record missing a key reads as null).

    Raises:
        Unfit: an annotation none of the records uses yet.
    """
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return arrow_type(typing.get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        present = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(present) == 1:
            return arrow_type(present[0])
    elif origin is Literal:
        if all(isinstance(v, str) for v in typing.get_args(annotation)):
            return pa.string()
    elif origin is list:
        return pa.list_(arrow_type(typing.get_args(annotation)[0]))
    elif isinstance(annotation, type):
        # bool before int: bool is an int to Python, not to Arrow
        for python, arrow in ((bool, pa.bool_()), (int, pa.int64()), (float, pa.float64())):
            if issubclass(annotation, python) and not issubclass(annotation, Enum):
                return arrow
        if issubclass(annotation, str):  # str and StrEnum (AssetType, Interval)
            return pa.string()
    raise Unfit(f"no Arrow column type for {annotation!r}")


def model_schema(*models: type[BaseModel]) -> pa.Schema:
    """One Arrow schema for the records of ``models``, columns in field order; several models
    (``fiml.raw``'s ticks and trades) share the columns they have in common, and each adds
    its own."""
    fields: dict[str, pa.Field] = {}
    for model in models:
        for name, info in model.model_fields.items():
            fields.setdefault(name, pa.field(name, arrow_type(info.annotation)))
    return pa.schema(list(fields.values()))


def settled(schema: pa.Schema) -> pa.Schema:
    """An inferred schema fit for later chunks: a column that was only ever null (or a list
    only ever empty) in the first chunk becomes a string one, the likeliest type of a key
    seen unset."""

    def settle(kind: pa.DataType) -> pa.DataType:
        if pa.types.is_null(kind):
            return pa.string()
        if pa.types.is_list(kind):
            return pa.list_(settle(kind.value_type))
        return kind

    return pa.schema([pa.field(f.name, settle(f.type)) for f in schema])


def jsonl_block(values: Sequence[bytes | None]) -> bytes | None:
    """``values`` joined by newlines, or None unless each is one line that starts with ``{``
    and ends with ``}``.

    About 0.1 us a record: one list comprehension compares the first and last byte of each
    value and looks for a newline in it (memchr), then one join.
    """
    lines = cast(Sequence[bytes], values)  # a None (tombstone) raises TypeError below
    try:
        if not all([v[0] == _OPEN and v[-1] == _CLOSE and _NEWLINE not in v for v in lines]):
            return None
    except (TypeError, IndexError):
        return None  # a tombstone, or an empty value
    return b"\n".join(lines)


def objects_only(values: Sequence[bytes | None]) -> tuple[list[int], list[bytes]]:
    """The indices of the values that are JSON, and each as one compact line: an object as
    it is, any other JSON value as ``{"value": ...}`` (as ``fiml replay`` always did). Values
    that are not JSON (or absent: tombstones) are left out."""
    kept: list[int] = []
    lines: list[bytes] = []
    for i, value in enumerate(values):
        if value is None:
            continue
        try:
            parsed = orjson.loads(value)
        except orjson.JSONDecodeError:
            continue
        kept.append(i)
        lines.append(orjson.dumps(parsed if isinstance(parsed, dict) else {"value": parsed}))
    return kept, lines


def meta_line(line: bytes, partition: int, offset: int, timestamp_ms: int) -> bytes:
    """A JSON object line with ``partition``, ``offset`` and ``timestamp_ms`` keys in front."""
    head = b'{"partition":%d,"offset":%d,"timestamp_ms":%d' % (partition, offset, timestamp_ms)
    rest = line[1:]
    return head + (rest if rest.lstrip().startswith(b"}") else b"," + rest)


def parse_lines(block: bytes, schema: pa.Schema | None) -> pa.Table:
    """JSON Lines (objects) parsed in C++, against ``schema`` if given (keys it lacks are
    inferred and kept as extra columns: ``conform`` reports them).

    Raises:
        pyarrow.ArrowInvalid: a line is not a JSON object, or a value does not fit its column.
    """
    options = pa_json.ParseOptions(explicit_schema=schema) if schema is not None else None
    # A BufferReader, not a BytesIO: Arrow reads it without calling back into Python (the
    # GIL). One thread: beside the reader and the broker on two cores, Arrow's pool of two
    # more made the whole export slower (CSV 0.71x against 0.77x of the bare consumer).
    return pa_json.read_json(
        pa.BufferReader(block), read_options=_ONE_THREAD, parse_options=options
    )


def parse_records(values: Sequence[bytes | None], schema: pa.Schema | None) -> pa.Table | None:
    """The values (JSON objects) parsed in one call, one row each; None if that fails or a
    value gave other than one row (a tombstone, an empty value, a non-object, two objects in
    one value): the caller then checks the chunk record by record.

    Arrow's parse checks the JSON, so the only checks in Python are ``all`` and a count:
    nothing holds the GIL for long while the reader runs beside. (A value of blanks in the
    same chunk as a value of two objects would pass; no FIML producer writes either.)
    """
    if not all(values):
        return None
    try:
        table = parse_lines(b"\n".join(cast(Sequence[bytes], values)), schema)
    except pa.ArrowInvalid:
        return None
    return table if table.num_rows == len(values) else None


def fitting_only(lines: Sequence[bytes], schema: pa.Schema) -> list[int]:
    """The indices of the lines that parse against ``schema``: the slow path, one parse per
    line, taken only for a chunk whose one parse failed."""
    kept = []
    for i, line in enumerate(lines):
        try:
            parse_lines(line, schema)
        except pa.ArrowInvalid:
            continue
        kept.append(i)
    return kept


def conform(table: pa.Table, schema: pa.Schema) -> tuple[pa.Table, list[str]]:
    """``table`` with exactly ``schema``'s columns, in its order (a column no record of the
    chunk had is all null), and the names of the columns it had beyond them (dropped)."""
    extra = [name for name in table.column_names if name not in schema.names]
    columns = [_column_as(table, f) for f in schema]
    return pa.Table.from_arrays(columns, schema=schema), extra


def _column_as(table: pa.Table, field: pa.Field) -> pa.ChunkedArray:
    # no cast for a column already right: with the model's schema, every column of a chunk
    if field.name not in table.column_names:
        return pa.chunked_array([pa.nulls(table.num_rows, field.type)])
    column = table.column(field.name)
    return column if column.type == field.type else column.cast(field.type)


def with_meta(
    table: pa.Table, partitions: Sequence[int], offsets: Sequence[int], timestamps: Sequence[int]
) -> pa.Table:
    """``table`` with the ``META_FIELDS`` columns in front."""
    meta = [
        pa.array(values, field.type)
        for field, values in zip(META_FIELDS, (partitions, offsets, timestamps), strict=True)
    ]
    return pa.Table.from_arrays(
        [*meta, *table.columns], schema=pa.schema([*META_FIELDS, *table.schema])
    )


def _nested(kind: pa.DataType) -> bool:
    return bool(pa.types.is_nested(kind))


def csv_schema(schema: pa.Schema) -> pa.Schema:
    """``schema`` as CSV writes it: list (and object) columns become text columns."""
    return pa.schema([pa.field(f.name, pa.string() if _nested(f.type) else f.type) for f in schema])


def csv_ready(table: pa.Table) -> pa.Table:
    """``table`` with each list (or object) cell as its JSON text: lists stay one cell, as
    JSON is unambiguous and spreadsheet-safe."""
    columns = [json_text(c) if _nested(c.type) else c for c in table.columns]
    return pa.Table.from_arrays(columns, schema=csv_schema(table.schema))


def json_text(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """Each cell of a nested column as compact JSON text, the bytes orjson writes; a null
    stays null."""
    return pa.chunked_array([_json_text_of(chunk) for chunk in column.chunks], type=pa.string())


def _json_text_of(cells: pa.Array) -> pa.Array:
    if cells.type == _STRING_LIST and not pc.any(pc.match_substring(cells.flatten(), "\0")).as_py():
        return _json_text_by_value(cells)
    # another nested type (a topic outside the registry), or a NUL in a string: cell by cell
    return pa.array(
        [None if v is None else orjson.dumps(v).decode() for v in cells.to_pylist()], pa.string()
    )


def _json_text_by_value(cells: pa.ListArray) -> pa.Array:
    # Lists of providers or flags take few distinct values: orjson writes each distinct list
    # once (joined on NUL, which no string holds here, to count them in C++) and Arrow repeats
    # the text by index. About 0.04 us a cell, against 0.16 for escaping and joining every
    # cell with Arrow kernels.
    distinct = pc.dictionary_encode(pc.binary_join(cells, "\0"))
    texts = [orjson.dumps(v.split("\0")).decode() for v in distinct.dictionary.to_pylist()]
    text = pc.take(pa.array(texts, pa.string()), distinct.indices)  # a null list: a null index
    # [] and [""] join alike: tell them apart by length
    return pc.if_else(pc.equal(pc.list_value_length(cells), 0), pa.scalar("[]"), text)
