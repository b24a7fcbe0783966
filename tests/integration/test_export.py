"""``fiml replay`` (topic -> file) against a real broker: exactly the committed records of the
range, each partition in its order, in every format; nothing but the summary on a non-tty."""

from __future__ import annotations

import asyncio
import csv
import io
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import pyarrow.parquet as pq
import pytest
import typer
from aiokafka import AIOKafkaProducer
from typer.testing import CliRunner

from infra import export, export_progress
from infra.client_cli import register
from infra.topics import ensure_topic
from schemas.codec import encode
from schemas.records import AssetType, PriceUpdate
from schemas.topics import topic_name
from tests.conftest import TopicFactory

pytestmark = pytest.mark.integration

# The range starts now and ends a minute ahead. Kafka's offset-for-time lookup counts the
# transaction markers, which the broker stamps with its clock when a transaction ends: records
# stamped in the past by a transactional producer would put a marker stamped "now" before them
# (FIML's producers stamp with the clock at send time, so their markers follow their records).
#: The range, set again by ``prices`` when it writes (``now``). Kafka's offset-for-time lookup
#: also sees transaction markers, which the broker stamps with its own clock at the commit:
#: a range that ended before the markers were written would end at the first marker (a CI run
#: reached this test minutes after the module was imported, and missed the committed records).
T0 = int(time.time() * 1000)
END = T0 + 60_000  # --to, exclusive; the records after the range are stamped at END
PARTITIONS = 3


def price(i: int, symbol: str) -> bytes:
    value = 100.0 + i
    return encode(
        PriceUpdate(symbol=symbol, asset_type=AssetType.CRYPTO, price=value, confidence=0.5,
                    band_low=value - 1, band_high=value + 1, providers_used=["a", "b"],
                    flags=["stale"] if i % 2 else [], event_time_ms=T0 + i, source_ticks=2,
                    provider="a", day_open=100.0, volume=None if i % 3 else 5.0)
    )  # fmt: skip


Sent = dict[int, list[bytes]]  # partition -> values of the range, in offset order


async def fill(bootstrap: str, topic: str) -> Sent:
    """Records before, in and after the range on every partition (one in partition 0 stamped
    before its predecessor), an aborted transaction's and a committed one's in the range."""
    expected: Sent = {p: [] for p in range(PARTITIONS)}
    plain = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await plain.start()
    try:
        for i in range(5):
            await plain.send_and_wait(
                topic, price(i, "OLD"), partition=i % 3, timestamp_ms=T0 - 500
            )
        for i in range(60):
            p, stamp = i % PARTITIONS, T0 + (5 if i == 30 else i * 100)  # 30: backwards in p0
            value = price(i, f"S{i % 4}")
            await plain.send_and_wait(topic, value, key=f"S{i % 4}".encode(), partition=p,
                                      timestamp_ms=stamp)  # fmt: skip
            expected[p].append(value)
    finally:
        await plain.stop()
    transactional = AIOKafkaProducer(
        bootstrap_servers=bootstrap, transactional_id=f"test-export-{uuid.uuid4().hex[:8]}"
    )
    await transactional.start()
    try:
        await transactional.begin_transaction()
        for i in range(4):
            await transactional.send_and_wait(topic, price(100 + i, "ABORTED"), key=b"S0",
                                              partition=i % 3, timestamp_ms=T0 + 7_000)  # fmt: skip
        await transactional.abort_transaction()
        async with transactional.transaction():
            for i in range(4):
                value = price(200 + i, "S1")
                await transactional.send(topic, value, key=b"S1", partition=i % 3,
                                         timestamp_ms=T0 + 8_000 + i)  # fmt: skip
                expected[i % 3].append(value)
    finally:
        await transactional.stop()
    plain = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await plain.start()
    try:
        for i in range(5):
            await plain.send_and_wait(topic, price(i, "NEW"), partition=i % 3, timestamp_ms=END)
    finally:
        await plain.stop()
    return expected


@pytest.fixture
async def prices(kafka_bootstrap: str, topic_prefix: str) -> tuple[str, Sent]:
    """``fiml.prices`` under a fresh prefix, filled; its name and the range's records."""
    global T0, END
    T0 = int(time.time() * 1000)
    END = T0 + 60_000
    name = topic_name("fiml.prices")
    await ensure_topic(kafka_bootstrap, name, PARTITIONS, {})
    return name, await fill(kafka_bootstrap, name)


async def replay(bootstrap: str, *args: str) -> tuple[int, str, str]:
    """``fiml replay ...`` in a thread (it runs its own event loop): exit code, out, err."""
    app = typer.Typer()
    register(app)
    argv = ["replay", *args, "--from", str(T0), "--to", str(END), "--bootstrap", bootstrap]
    result = await asyncio.to_thread(CliRunner().invoke, app, argv)
    return result.exit_code, result.stdout, result.stderr


def by_partition(rows: list[dict[str, Any]]) -> dict[int, list[dict[str, Any]]]:
    """Rows (with meta) grouped by partition, after checking that offsets only increase."""
    grouped: dict[int, list[dict[str, Any]]] = {}
    last: dict[int, int] = {}
    for row in rows:
        p, offset = int(row.pop("partition")), int(row.pop("offset"))
        assert offset > last.get(p, -1), "a partition's order was not kept"
        last[p] = offset
        row.pop("timestamp_ms")
        grouped.setdefault(p, []).append(row)
    return grouped


def records(sent: Sent) -> dict[int, list[dict[str, Any]]]:
    return {p: [orjson.loads(v) for v in values] for p, values in sent.items()}


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
async def test_every_format_has_exactly_the_committed_records_of_the_range(
    kafka_bootstrap: str,
    prices: tuple[str, Sent],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fmt: str,
) -> None:
    name, sent = prices
    # the bar would be drawn at once on a terminal: the CLI's stderr here is not one
    monkeypatch.setattr(export_progress, "AFTER_RECORDS", 0)
    monkeypatch.setattr(export_progress, "AFTER_S", 0.0)
    path = tmp_path / f"prices.{fmt}"
    code, out, err = await replay(
        kafka_bootstrap, "fiml.prices", "--format", fmt, "--meta", "-o", str(path)
    )
    total = sum(len(v) for v in sent.values())
    assert (code, out, err) == (0, "", f"{total} records from {name}\n")
    expected = records(sent)
    if fmt == "jsonl":
        rows = [orjson.loads(line) for line in path.read_bytes().splitlines()]
        assert by_partition(rows) == expected
    elif fmt == "parquet":
        assert by_partition(pq.read_table(path).to_pylist()) == expected
    else:
        got = by_partition(list(csv.DictReader(io.StringIO(path.read_text(), newline=""))))
        assert {p: [(r["symbol"], float(r["price"]), orjson.loads(r["flags"]), r["volume"])
                    for r in rows] for p, rows in got.items()} == {
            p: [(r["symbol"], r["price"], r["flags"], "" if r["volume"] is None else "5")
                for r in rows] for p, rows in expected.items()
        }  # fmt: skip


async def test_jsonl_to_stdout_is_the_record_bytes_of_the_symbols_asked_for(
    kafka_bootstrap: str, prices: tuple[str, Sent]
) -> None:
    name, sent = prices
    code, out, err = await replay(kafka_bootstrap, name, "--symbols", "S1,S3")
    wanted = [v for vs in sent.values() for v in vs if orjson.loads(v)["symbol"] in {"S1", "S3"}]
    assert code == 0 and err == f"{len(wanted)} records from {name}\n"
    assert sorted(out.encode().splitlines()) == sorted(wanted)  # the bytes as they were sent


async def test_a_missing_topic_is_one_sentence(kafka_bootstrap: str) -> None:
    code, _, err = await replay(kafka_bootstrap, "no-such-topic-here")
    assert code == 2 and "topic no-such-topic-here does not exist on" in err


async def test_a_topic_of_arbitrary_bytes_keeps_its_json_objects(
    kafka_bootstrap: str, make_topic: TopicFactory, tmp_path: Path
) -> None:
    """A dead-letter-like topic: values that are not JSON are left out and counted."""
    topic = await make_topic("export-junk")
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        for value in (b'{"a": 1}', b"\xff\x00 not json", b"[1, 2]", b'{"b":\n2}'):
            await producer.send_and_wait(topic, value, timestamp_ms=T0)
    finally:
        await producer.stop()
    with (tmp_path / "junk.jsonl").open("wb") as out:
        result = await export.export_range(kafka_bootstrap, topic, T0, None, out)
    lines = (tmp_path / "junk.jsonl").read_bytes().splitlines()
    assert lines == [b'{"a":1}', b'{"value":[1,2]}', b'{"b":2}']
    assert (result.written, result.not_json) == (3, 1)


async def test_small_chunks_keep_every_partitions_order_and_report_progress(
    kafka_bootstrap: str,
    prices: tuple[str, Sent],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Many chunks queued for the writer thread (5 records each), Parquet row groups of
    several chunks: the same records in the same order; progress ends at its total."""
    name, sent = prices
    monkeypatch.setattr(export, "ROW_GROUP_ROWS", 12)
    calls: list[tuple[int, int]] = []
    path = tmp_path / "prices.parquet"
    with path.open("wb") as out:
        result = await export.export_range(
            kafka_bootstrap, name, T0, END, out, "parquet",
            models=export.topic_models("fiml.prices"), meta=True, chunk_records=5,
            progress=lambda done, total: calls.append((done, total)),
        )  # fmt: skip
    assert result.written == sum(len(v) for v in sent.values())
    assert by_partition(pq.read_table(path).to_pylist()) == records(sent)
    assert pq.ParquetFile(path).metadata.num_row_groups == -(-result.written // 15)
    done, total = calls[-1]
    assert done == total >= result.written  # offsets: aborted records and markers count too
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)
