"""``fiml replay``'s conversions (infra/export_formats.py): schemas from the models, the JSON
Lines checks, chunks to Arrow tables, CSV cells and the meta columns."""

from __future__ import annotations

from typing import Any

import orjson
import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from infra.export import topic_models
from infra.export_formats import (
    Unfit,
    arrow_type,
    conform,
    csv_ready,
    fitting_only,
    json_text,
    jsonl_block,
    meta_line,
    model_schema,
    objects_only,
    parse_lines,
    parse_records,
    settled,
    with_meta,
)
from schemas.codec import RECORD_TYPES
from schemas.records import PriceUpdate

STRINGS = pa.list_(pa.string())


@pytest.mark.parametrize("logical", [*RECORD_TYPES, "fiml.raw"])
def test_every_registry_topic_has_columns_of_its_model(logical: str) -> None:
    models = topic_models(logical)
    schema = model_schema(*models)
    assert schema.names == list(dict.fromkeys(f for m in models for f in m.model_fields))


def test_the_price_columns() -> None:
    schema = model_schema(PriceUpdate)
    assert schema.field("v").type == pa.int64()
    assert schema.field("symbol").type == pa.string()
    assert schema.field("asset_type").type == pa.string()  # a StrEnum
    assert schema.field("price").type == pa.float64()
    assert schema.field("volume").type == pa.float64()  # Optional[Annotated[float, ...]]
    assert schema.field("providers_used").type == STRINGS
    assert schema.field("event_time_ms").type == pa.int64()


def test_raw_has_the_columns_of_ticks_and_trades() -> None:
    schema = model_schema(*topic_models("fiml.raw"))
    assert {"bid", "ask", "trade_id", "amount", "side"} <= set(schema.names)
    assert schema.field("history").type == pa.bool_()  # bool, not int
    assert schema.field("side").type == pa.string()  # Literal["buy", "sell"] | None


def test_an_unknown_field_type_is_refused_plainly() -> None:
    with pytest.raises(Unfit, match="no Arrow column type"):
        arrow_type(dict[str, int])


def test_settled_gives_never_set_columns_a_type() -> None:
    inferred = pa.schema([("a", pa.null()), ("b", pa.list_(pa.null())), ("c", pa.float64())])
    assert settled(inferred) == pa.schema([("a", pa.string()), ("b", STRINGS), ("c", pa.float64())])


# ------------------------------------------------------------------------- JSON Lines


def test_jsonl_block_joins_one_line_objects() -> None:
    assert jsonl_block([b'{"a":1}', b'{"b":2}']) == b'{"a":1}\n{"b":2}'
    assert jsonl_block([]) == b""


@pytest.mark.parametrize(
    "odd",
    [None, b"", b"[1]", b"42", b'"x"', b'{"a":\n1}', b"\xff\xfe", b'{"a":1}\n{"b":2}'],
    ids=["tombstone", "empty", "array", "number", "string", "newline", "binary", "two"],
)
def test_jsonl_block_refuses_anything_but_one_line_objects(odd: bytes | None) -> None:
    assert jsonl_block([b'{"a":1}', odd, b'{"b":2}']) is None


def test_objects_only_keeps_json_and_wraps_other_values() -> None:
    values = [b'{"a": 1}', b"not json", None, b"[1,2]", b"3", b'{"b":\n"x"}', b"\xff"]
    kept, lines = objects_only(values)
    assert kept == [0, 3, 4, 5]
    assert lines == [b'{"a":1}', b'{"value":[1,2]}', b'{"value":3}', b'{"b":"x"}']


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b'{"a":1}', b'{"partition":2,"offset":7,"timestamp_ms":9,"a":1}'),
        (b"{}", b'{"partition":2,"offset":7,"timestamp_ms":9}'),
        (b"{ }", b'{"partition":2,"offset":7,"timestamp_ms":9 }'),
    ],
)
def test_meta_line_puts_the_meta_keys_first(line: bytes, expected: bytes) -> None:
    assert meta_line(line, 2, 7, 9) == expected
    assert orjson.loads(meta_line(line, 2, 7, 9)) == orjson.loads(expected)


# ------------------------------------------------------------------------------ tables

SCHEMA = pa.schema([("symbol", pa.string()), ("price", pa.float64()), ("flags", STRINGS)])


def test_a_missing_key_and_a_null_read_as_null() -> None:
    table, extra = conform(
        parse_lines(b'{"symbol":"A","price":1.5}\n{"symbol":"B","price":null,"flags":[]}', SCHEMA),
        SCHEMA,
    )
    assert extra == []
    assert table.to_pylist() == [
        {"symbol": "A", "price": 1.5, "flags": None},
        {"symbol": "B", "price": None, "flags": []},
    ]


def test_conform_orders_the_columns_and_reports_extra_keys() -> None:
    table, extra = conform(parse_lines(b'{"new":1,"price":2,"symbol":"A"}', SCHEMA), SCHEMA)
    assert table.schema == SCHEMA and extra == ["new"]
    assert table.to_pylist() == [{"symbol": "A", "price": 2.0, "flags": None}]


def test_parse_records_gives_one_row_a_value_or_nothing() -> None:
    table = parse_records([b'{"symbol":"A"}', b'{"price":\n2}'], SCHEMA)  # spread over lines
    assert table is not None and table.column("price").to_pylist() == [None, 2.0]


@pytest.mark.parametrize(
    "odd",
    [None, b"", b"[1]", b"42", b"\xff\xfe", b'{"a":1}\n{"b":2}', b'{"price":"x"}'],
    ids=["tombstone", "empty", "array", "number", "binary", "two", "unfit"],
)
def test_parse_records_refuses_a_chunk_with_anything_but_one_object_a_value(
    odd: bytes | None,
) -> None:
    assert parse_records([b'{"symbol":"A"}', odd, b'{"price":2}'], SCHEMA) is None


def test_a_value_that_does_not_fit_fails_the_parse_and_is_found() -> None:
    lines = [b'{"price":1}', b'{"price":"high"}', b'{"price":3}']
    with pytest.raises(pa.ArrowInvalid):
        parse_lines(b"\n".join(lines), SCHEMA)
    assert fitting_only(lines, SCHEMA) == [0, 2]


def test_with_meta_adds_the_columns_in_front() -> None:
    two = parse_lines(b'{"symbol":"A"}\n{"symbol":"B"}', SCHEMA)
    table = with_meta(two, [0, 3], [5, 6], [7, 8])
    assert table.column_names[:3] == ["partition", "offset", "timestamp_ms"]
    assert table.schema.field("partition").type == pa.int32()
    assert table.to_pylist()[1] == {
        "partition": 3, "offset": 6, "timestamp_ms": 8, "symbol": "B", "price": None, "flags": None,
    }  # fmt: skip


def test_lists_become_one_json_cell_in_csv() -> None:
    table, _ = conform(
        parse_lines(b'{"flags":["stale","a\\"b"]}\n{"flags":[]}\n{"symbol":"C"}', SCHEMA), SCHEMA
    )
    ready = csv_ready(table)
    assert ready.schema.field("flags").type == pa.string()
    assert ready.column("flags").to_pylist() == ['["stale","a\\"b"]', "[]", None]


def _cells(values: list[Any], kind: pa.DataType) -> list[Any]:
    return list(json_text(pa.chunked_array([pa.array(values, kind)])).to_pylist())


@given(st.lists(st.none() | st.lists(st.text(max_size=8), max_size=4), max_size=20))
def test_a_list_cell_is_what_orjson_writes(lists: list[list[str] | None]) -> None:
    """The Arrow kernels' text equals orjson's for any strings: quotes, backslashes, unicode,
    and (through the fallback) control characters."""
    expected = [None if v is None else orjson.dumps(v).decode() for v in lists]
    assert _cells(lists, STRINGS) == expected


@pytest.mark.parametrize(
    "lists",
    [
        [[], [""], None, ["", ""], ["\n", "\u2028"], ["a"], ["a"]],  # written once a value
        [[], [""], None, ["a\x00b"], ["a"]],  # a NUL: cell by cell
    ],
    ids=["by value", "with a NUL"],
)
def test_list_cells_that_look_alike_stay_apart(lists: list[list[str] | None]) -> None:
    expected = [None if v is None else orjson.dumps(v).decode() for v in lists]
    assert _cells(lists, STRINGS) == expected


def test_a_list_cell_of_a_sliced_chunk() -> None:
    whole = pa.array([["a"], ['b"'], None, ["c", "d"]], STRINGS)
    assert list(json_text(pa.chunked_array([whole.slice(1, 3)])).to_pylist()) == [
        '["b\\""]',
        None,
        '["c","d"]',
    ]


def test_other_nested_cells_go_through_orjson() -> None:
    assert _cells([{"a": 1}, None], pa.struct([("a", pa.int64())])) == ['{"a":1}', None]
    assert _cells([[1, 2]], pa.list_(pa.int64())) == ["[1,2]"]
