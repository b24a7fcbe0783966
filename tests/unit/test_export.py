"""``fiml replay``'s writers without a broker (infra/export.py): the merge into time order,
chunks through each format and back, values that are not records, and the progress bar."""

from __future__ import annotations

import csv
import io
from typing import Any, NamedTuple

import orjson
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rich.console import Console

from infra.export import (
    Chunk,
    ExportResult,
    Format,
    MixedRecordsError,
    sink_for,
    time_ordered,
    topic_models,
)
from infra.export_progress import RangeProgress
from schemas.codec import encode
from schemas.records import PriceUpdate
from tests.unit.schemas.strategies import price_updates

PRICES = topic_models("fiml.prices")


class Rec(NamedTuple):
    timestamp: int
    run: int
    position: int  # in its run (a field named index would hide tuple.index)


@given(st.lists(st.lists(st.integers(0, 50), max_size=30), min_size=1, max_size=5))
def test_time_ordered_keeps_each_partitions_order_exactly(stamps: list[list[int]]) -> None:
    runs = [[Rec(t, r, i) for i, t in enumerate(run)] for r, run in enumerate(stamps)]
    merged = time_ordered(runs)
    assert sorted(merged) == sorted(r for run in runs for r in run)
    for r, run in enumerate(runs):
        assert [m for m in merged if m.run == r] == run  # even where stamps go backwards
    if all(run == sorted(run) for run in stamps):  # each partition in time order: all of it
        assert [m.timestamp for m in merged] == sorted(m.timestamp for m in merged)


def test_time_ordered_breaks_ties_by_run() -> None:
    a, b = [Rec(5, 0, 0), Rec(6, 0, 1)], [Rec(5, 1, 0), Rec(5, 1, 1)]
    assert time_ordered([a, b]) == [a[0], b[0], b[1], a[1]]


def test_a_chunk_splits_with_its_meta() -> None:
    head, rest = Chunk([b"a", b"b", b"c"], [0, 1, 2], [5, 6, 7], [8, 9, 10]).split(2)
    assert head == Chunk([b"a", b"b"], [0, 1], [5, 6], [8, 9])
    assert rest == Chunk([b"c"], [2], [7], [10])
    assert Chunk([b"a", b"b"]).split(1) == (Chunk([b"a"]), Chunk([b"b"]))


def write(fmt: Format, chunks: list[Chunk], models: Any = PRICES, meta: bool = False) -> Any:
    """The bytes ``chunks`` become in ``fmt``, and the result."""
    out, result = io.BytesIO(), ExportResult()
    sink = sink_for(fmt, out, models, meta, result)
    for chunk in chunks:
        sink.write(chunk)
    sink.close()
    return out.getvalue(), result


def chunks_of(values: list[bytes | None], size: int = 3) -> list[Chunk]:
    return [Chunk(values[i : i + size]) for i in range(0, len(values), size)]


def csv_rows(data: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(data.decode(), newline="")))


def as_written(record: PriceUpdate) -> dict[str, Any]:
    return record.model_dump(mode="json")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(price_updates(), min_size=1, max_size=12))
def test_prices_round_trip_through_every_format(records: list[PriceUpdate]) -> None:
    """Any PriceUpdate (full float range, any strings) comes back equal: JSON Lines byte for
    byte, Parquet value for value (lists as lists), CSV cell for cell (lists as JSON)."""
    values: list[bytes | None] = [encode(r) for r in records]
    expected = [as_written(r) for r in records]

    jsonl, result = write("jsonl", chunks_of(values))
    assert jsonl == b"".join(v + b"\n" for v in values if v) and result.written == len(values)

    parquet, result = write("parquet", chunks_of(values))
    table = pq.read_table(io.BytesIO(parquet))
    assert table.to_pylist() == expected and result.written == len(values)
    assert table.num_columns == len(PriceUpdate.model_fields)

    rows = csv_rows(write("csv", chunks_of(values))[0])
    assert len(rows) == len(expected)
    for row, want in zip(rows, expected, strict=True):
        assert list(row) == list(want)
        for key, value in want.items():
            cell = row[key]
            if value is None or isinstance(value, str):
                assert cell == (value or "")
            elif isinstance(value, list):
                assert orjson.loads(cell) == value
            else:
                assert type(value)(cell) == value


def test_meta_columns_in_every_format() -> None:
    values: list[bytes | None] = [b'{"a":1}', b'{"b":[1]}']
    chunk = Chunk(values, partitions=[3, 1], offsets=[10, 4], timestamps=[100, 90])
    meta = [{"partition": 3, "offset": 10, "timestamp_ms": 100},
            {"partition": 1, "offset": 4, "timestamp_ms": 90}]  # fmt: skip
    jsonl, _ = write("jsonl", [chunk], models=(), meta=True)
    assert [orjson.loads(line) for line in jsonl.splitlines()] == [
        {**meta[0], "a": 1}, {**meta[1], "b": [1]}
    ]  # fmt: skip
    parquet, _ = write("parquet", [chunk], models=(), meta=True)
    assert pq.read_table(io.BytesIO(parquet)).to_pylist() == [
        {**meta[0], "a": 1, "b": None}, {**meta[1], "a": None, "b": [1]}
    ]  # fmt: skip
    rows = csv_rows(write("csv", [chunk], models=(), meta=True)[0])
    assert rows[1] == {"partition": "1", "offset": "4", "timestamp_ms": "90", "a": "", "b": "[1]"}


def test_a_record_topic_chunk_with_a_stray_value_is_checked_record_by_record() -> None:
    good = encode(
        PriceUpdate(symbol="A", asset_type="equity", price=1.0, confidence=1.0, band_low=1.0,
                    band_high=1.0, providers_used=["p"], event_time_ms=0, source_ticks=1,
                    provider="p", day_open=1.0)
    )  # fmt: skip
    values: list[bytes | None] = [good, None, b"garbage}", good]
    chunk = Chunk(values, partitions=[0] * 4, offsets=[0, 1, 2, 3], timestamps=[0] * 4)
    for fmt in ("jsonl", "csv", "parquet"):
        _, result = write(fmt, [chunk], meta=True)
        assert (result.written, result.not_json) == (2, 2), fmt
    jsonl, _ = write("jsonl", [chunk], meta=True)
    assert [orjson.loads(line)["offset"] for line in jsonl.splitlines()] == [0, 3]


def test_a_topic_outside_the_registry_takes_its_columns_from_the_first_chunk() -> None:
    first = Chunk([b'{"id":1,"note":null}', b"not json", b"7"])
    later = Chunk([b'{"id":2,"note":"x","new":true}', b'{"id":"three"}', b'{"id":4}'])
    parquet, result = write("parquet", [first, later], models=())
    assert pq.read_table(io.BytesIO(parquet)).to_pylist() == [
        {"id": 1, "note": None, "value": None},
        {"id": None, "note": None, "value": 7},  # a JSON value that is not an object
        {"id": 2, "note": "x", "value": None},
        {"id": 4, "note": None, "value": None},
    ]
    assert (result.written, result.not_json, result.unfit) == (4, 1, 1)
    assert result.extra_keys == {"new"}
    # JSON Lines keeps every JSON value of it, non-objects wrapped
    jsonl, result = write("jsonl", [first, later], models=())
    assert jsonl.splitlines()[1] == b'{"value":7}' and result.not_json == 1


def test_no_record_still_makes_a_valid_file_with_the_columns() -> None:
    parquet, _ = write("parquet", [], meta=True)
    schema = pq.read_schema(io.BytesIO(parquet))
    assert schema.names[:4] == ["partition", "offset", "timestamp_ms", "v"]
    header = write("csv", [])[0].decode().splitlines()
    assert header[0].replace('"', "").split(",") == list(PriceUpdate.model_fields)
    assert write("jsonl", [])[0] == b""


# ---------------------------------------------------------------------------- progress


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def screen() -> tuple[Console, io.StringIO]:
    text = io.StringIO()
    return Console(file=text, force_terminal=True, width=120), text


def test_progress_never_draws_on_a_pipe() -> None:
    console, text = screen()
    progress = RangeProgress("t", is_tty=False, console=console, after_records=0, after_s=0)
    progress(5, 10_000_000)
    progress.close()
    assert not progress.shown and text.getvalue() == ""


@pytest.mark.parametrize(
    ("total", "seconds", "shown"),
    [(200_000, 1.0, False), (200_001, 0.0, True), (10, 2.5, True)],
    ids=["short", "long range", "long run"],
)
def test_progress_draws_on_a_terminal_for_long_runs(
    total: int, seconds: float, shown: bool
) -> None:
    console, text = screen()
    clock = Clock()
    progress = RangeProgress("fiml.prices", is_tty=True, console=console, clock=clock)
    clock.now = seconds
    progress(5, total)
    progress.close()
    assert progress.shown is shown
    assert ("fiml.prices" in text.getvalue()) is shown


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_records_of_no_one_shape_are_one_sentence_and_no_later_chunk_is_written(
    fmt: Format,
) -> None:
    """A topic outside the registry whose first chunk mixes a number and a string under one
    key: a clear error, and the chunks after it are not written (a file with a hole in it
    would look whole)."""
    out, result = io.BytesIO(), ExportResult()
    sink = sink_for(fmt, out, (), False, result)
    with pytest.raises(MixedRecordsError, match="export this topic as jsonl"):
        sink.write(Chunk([b'{"a": 1}', b'{"a": "x"}']))
    sink.write(Chunk([b'{"a": 2}']))
    sink.close()
    assert result.written == 0
