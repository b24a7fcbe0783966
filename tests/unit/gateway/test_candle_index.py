"""The candle index (gateway/candle_index.py) on a temporary file: what it keeps of any order
of revisions, that it answers what the scan answers, restarts, epochs, retention, the range,
paging and limits; and the feed's pure helpers (gateway/candle_feed.py). No broker:
tests/integration/test_candle_index.py runs it inside a gateway against a real one."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.candle_feed import (
    CandleFeed,
    IndexBehind,
    IndexFileBusy,
    IndexState,
    claim_index_file,
    retry_after_s,
)
from gateway.candle_index import (
    LAYOUT_VERSION,
    MEMORY,
    Answer,
    CandleIndex,
    PartitionState,
    candle_row,
    covers,
)
from gateway.hub import Hub
from gateway.rest import NewestCandles, candles_json
from gateway.settings import GatewaySettings
from schemas.codec import encode
from schemas.records import Interval, OHLCVUpdate
from tests.unit.gateway.test_rest import (
    MIN,
    T0,
    FakeReader,
    candle,
    ohlcv,
    worker_order,
    worker_streams,
)

EPOCH = "0123abcd"


@dataclass(frozen=True)
class Msg:
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


def msgs(candles: Sequence[OHLCVUpdate], partition: int = 0, first: int = 0) -> list[Msg]:
    """Candles as the worker writes them: keyed by symbol, at consecutive offsets."""
    return [Msg(partition, first + i, c.symbol.encode(), encode(c)) for i, c in enumerate(candles)]


@pytest.fixture
def index(tmp_path: Path) -> Iterator[CandleIndex]:
    idx = CandleIndex(tmp_path / "candles.sqlite3")
    idx.prepare(EPOCH)
    yield idx
    idx.close()


def read(
    idx: CandleIndex, start: int, end: int, limit: int = 5_000, symbol: str = "AAPL"
) -> Answer:
    return idx.answer(symbol, "1m", start, end, limit)


def windows(answer: Answer) -> list[tuple[int, int, bool]]:
    out = []
    for record in answer.records:
        c = orjson.loads(record)
        out.append((c["window_start_ms"], c["rev"], c["is_final"]))
    return out


# --- what is kept ---------------------------------------------------------------------------

# Few windows and revisions: many revisions of one window, and ties, in one batch.
revisions = st.lists(
    st.tuples(st.integers(0, 8), st.integers(0, 2), st.booleans(), st.integers(0, 9)),
    max_size=60,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(revisions, st.integers(1, 10), st.lists(st.integers(1, 20), min_size=1))
def test_any_order_of_revisions_keeps_what_newest_candles_keeps(
    revs: list[tuple[int, int, bool, int]], limit: int, batch_sizes: list[int]
) -> None:
    folded = NewestCandles(limit)
    added = []
    for window, rev, final, tag in revs:
        # tags tell apart revisions that tie on (is_final, rev): the last one read must win
        c = candle(T0 + window * MIN, rev, final).model_copy(update={"volume": float(tag)})
        folded.add(c)
        added.append(c)
    idx = CandleIndex(MEMORY)
    idx.prepare(EPOCH)
    messages = msgs(added)
    done, sizes = 0, iter(batch_sizes * (len(messages) + 1))
    while done < len(messages):  # in batches of any sizes, each one transaction
        batch = messages[done : done + next(sizes)]
        done += len(batch)
        idx.ingest(batch, {0: done})
    answer = read(idx, T0, T0 + 9 * MIN, limit)
    idx.close()
    assert answer.records == [encode(c) for c in folded.candles()]
    assert answer.truncated == folded.truncated
    assert answer.next_end == (folded.candles()[0].window_start_ms if folded.truncated else None)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(worker_streams(), st.integers(-2, 13), st.integers(1, 14), st.integers(1, 6))
def test_any_range_of_any_worker_stream_is_what_the_scan_answers(
    written: list[tuple[int, bytes, bytes]], first: int, length: int, limit: int
) -> None:
    start, end = T0 + first * MIN + 7, T0 + (first + length) * MIN - 3  # not aligned on purpose
    scanned = asyncio.run(ohlcv(FakeReader([written]), start, end, max_candles=limit))
    idx = CandleIndex(MEMORY)
    idx.prepare(EPOCH)
    idx.ingest([Msg(0, i, key, value) for i, (_, key, value) in enumerate(written)], {})
    answer = read(idx, start, end, limit)
    idx.close()
    body = orjson.loads(candles_json("AAPL", Interval.M1, start, end, answer))
    assert body == orjson.loads(orjson.dumps(scanned))


def test_records_that_are_not_candles_are_skipped_and_counted(index: CandleIndex) -> None:
    good = candle(T0, 0)
    misaligned = orjson.loads(encode(candle(T0 + MIN, 0)))
    misaligned |= {"window_start_ms": T0 + 1, "window_end_ms": T0 + 1 + MIN}
    bad = [
        Msg(0, 0, b"AAPL", None),  # a tombstone
        Msg(0, 1, b"AAPL", b"not json"),
        Msg(0, 2, b"AAPL", orjson.dumps(misaligned)),
        Msg(0, 3, b"MSFT", encode(good)),  # under another symbol's key: no symbol's
    ]
    ok = [Msg(0, 4, b"AAPL", encode(good)), Msg(0, 5, None, encode(candle(T0 + MIN, 0)))]
    assert index.ingest(bad + ok, {0: 6}) == 4
    assert windows(read(index, T0, T0 + 10 * MIN)) == [(T0, 0, False), (T0 + MIN, 0, False)]
    assert candle_row(bad[3]) is None and candle_row(ok[1]) is not None


def test_the_stored_bytes_are_the_models_encoding_whatever_the_producer_wrote(
    index: CandleIndex,
) -> None:
    c = candle(T0, 0)
    spaced = orjson.dumps(orjson.loads(encode(c)), option=orjson.OPT_INDENT_2)
    index.ingest([Msg(0, 0, b"AAPL", spaced)], {0: 1})
    assert read(index, T0, T0 + MIN).records == [encode(c)]


# --- the range, paging, limits --------------------------------------------------------------


def test_start_is_inclusive_end_exclusive_and_other_series_are_left_out(
    index: CandleIndex,
) -> None:
    index.ingest(
        msgs([candle(T0 + k * MIN, 1, final=True) for k in range(5)])
        + msgs([candle(T0 + MIN, 0, symbol="MSFT")], first=5)
        + msgs([candle(T0 + 5 * MIN, 0, interval=Interval.M5)], first=6),
        {0: 7},
    )
    assert [w for w, _, _ in windows(read(index, T0 + MIN, T0 + 3 * MIN))] == [
        T0 + MIN,
        T0 + 2 * MIN,
    ]
    assert [w for w, _, _ in windows(read(index, T0 + MIN + 1, T0 + 3 * MIN + 1))] == [
        T0 + 2 * MIN,
        T0 + 3 * MIN,
    ]
    assert read(index, T0 + 5 * MIN, T0 + 10 * MIN).records == []
    assert len(index.answer("AAPL", "5m", T0, T0 + 10 * MIN, 10).records) == 1


def test_a_long_range_answers_its_newest_candles_and_pages_back(index: CandleIndex) -> None:
    index.ingest(msgs(worker_order(12)), {0: 24})
    pages: list[list[tuple[int, int, bool]]] = []
    end: int | None = T0 + 12 * MIN
    while end is not None:
        answer = read(index, T0, end, limit=5)
        pages.append(windows(answer))
        assert answer.truncated is (answer.next_end is not None)
        end = answer.next_end
    assert [len(p) for p in pages] == [5, 5, 2]
    assert pages[0][0][0] == T0 + 7 * MIN  # the newest five: windows 7..11
    assert [c for page in reversed(pages) for c in page] == [
        (T0 + k * MIN, 1, True) for k in range(12)
    ]
    exactly = read(index, T0, T0 + 5 * MIN, limit=5)  # as many as the limit: not truncated
    assert len(exactly.records) == 5 and not exactly.truncated and exactly.next_end is None


def test_a_range_is_closed_once_its_last_window_or_a_later_one_is_final(
    index: CandleIndex,
) -> None:
    index.ingest(msgs([candle(T0, 0), candle(T0 + MIN, 0), candle(T0, 1, final=True)]), {0: 3})
    assert read(index, T0, T0 + MIN).closed
    assert not read(index, T0, T0 + 2 * MIN).closed  # window 1 is still open
    index.ingest(msgs([candle(T0 + 2 * MIN, 0, final=True)], first=3), {0: 4})
    assert read(index, T0, T0 + 2 * MIN).closed  # a later window is final
    assert not read(index, T0, T0 + 2 * MIN, symbol="MSFT").closed


# --- restarts, epochs, retention ------------------------------------------------------------


def test_a_reopened_file_resumes_at_the_offsets_stored_with_its_candles(tmp_path: Path) -> None:
    path = tmp_path / "candles.sqlite3"
    first = CandleIndex(path)
    assert not first.prepare(EPOCH)  # a new file
    first.ingest(msgs(worker_order(3)), {0: 7, 1: 3})
    before = read(first, T0, T0 + 3 * MIN)
    first.close()
    again = CandleIndex(path)
    assert again.prepare(EPOCH)  # kept
    assert again.partitions() == {0: PartitionState(7), 1: PartitionState(3)}
    assert read(again, T0, T0 + 3 * MIN) == before
    again.close()


def test_another_epoch_or_layout_empties_the_file(tmp_path: Path) -> None:
    path = tmp_path / "candles.sqlite3"
    idx = CandleIndex(path)
    idx.prepare(EPOCH)
    idx.ingest(msgs(worker_order(3)), {0: 7})
    idx.close()
    idx = CandleIndex(path)
    assert not idx.prepare("feedf00d")  # the broker started afresh, or the topic was rebuilt
    assert idx.partitions() == {} and read(idx, T0, T0 + 3 * MIN).records == []
    assert idx.epoch() == "feedf00d"
    idx.ingest(msgs(worker_order(1)), {0: 2})
    idx.close()
    idx = CandleIndex(path)
    idx._db.execute("UPDATE meta SET value = 'old' WHERE key = 'layout'")
    assert not idx.prepare("feedf00d")
    assert read(idx, T0, T0 + 3 * MIN).records == []
    assert dict(idx._db.execute("SELECT key, value FROM meta").fetchall())["layout"] == (
        LAYOUT_VERSION
    )
    idx.close()


def test_retention_drops_the_rows_read_before_the_log_start_of_their_partition(
    index: CandleIndex,
) -> None:
    index.ingest(
        msgs([candle(T0 + k * MIN, 1, final=True) for k in range(4)])
        + msgs([candle(T0 + k * MIN, 1, final=True, symbol="MSFT") for k in range(4)], 1),
        {0: 4, 1: 4},
    )
    kept_from = T0 + 2 * MIN + 5
    assert index.retain({0: 2}, {0: kept_from}) == 2
    assert [w for w, _, _ in windows(read(index, T0, T0 + 4 * MIN))] == [
        T0 + 2 * MIN,
        T0 + 3 * MIN,
    ]
    assert len(read(index, T0, T0 + 4 * MIN, symbol="MSFT").records) == 4  # partition 1
    # retained_from as the scan says it: only when the range starts before the whole part
    assert read(index, T0, T0 + 4 * MIN).retained_from == kept_from
    assert read(index, kept_from, T0 + 4 * MIN).retained_from is None
    # a log start past the index's position moves it there: what was between is gone
    index.retain({1: 9}, {1: None})
    assert index.partitions()[1] == PartitionState(9, 9, None)
    assert read(index, T0, T0 + 4 * MIN, symbol="MSFT").records == []
    assert index.partitions()[0] == PartitionState(4, 2, kept_from)


def test_covers_wants_every_partition_read_to_its_end_and_retention_applied() -> None:
    state = {0: PartitionState(10, 2, T0), 1: PartitionState(5)}
    assert covers(state, {0: 2, 1: 0}, {0: 10, 1: 5})
    assert covers(state, {}, {0: 9, 1: 5})
    assert not covers(state, {}, {0: 11, 1: 5})  # not read that far yet
    assert not covers(state, {0: 3}, {0: 10})  # retention moved on since it was applied
    assert covers(state, {2: 4}, {2: 4})  # a partition with nothing in it
    assert not covers(state, {2: 0}, {2: 1})  # ... or with records the index has not seen
    # Retention emptied partition 1 when the index applied it; records came since: the first
    # of them says from when it is whole, and the index must learn it.
    emptied = {1: PartitionState(5, 5, None)}
    assert covers(emptied, {1: 5}, {1: 5})
    assert not covers(emptied | {1: PartitionState(7, 5, None)}, {1: 5}, {1: 7})
    assert covers(emptied | {1: PartitionState(7, 5, T0)}, {1: 5}, {1: 7})


# --- the feed's helpers ---------------------------------------------------------------------


def test_the_retry_estimate_needs_a_rate() -> None:
    assert retry_after_s(10_000, 5_000.0) == 2.0
    assert retry_after_s(10_000, None) is None and retry_after_s(1, 0.0) is None


def test_a_building_index_that_will_not_catch_up_in_time_says_when_to_come_back() -> None:
    feed = CandleFeed(GatewaySettings(), cast(Hub, None))
    feed.state = IndexState.BUILDING
    feed.read = 1_000  # records in the second since it started
    feed._started_at = time.monotonic() - 1.0
    feed._committed = {0: PartitionState(1_000)}
    feed._refuse_if_hopeless({0: 2_000}, 2.0)  # about a second to go: it waits
    with pytest.raises(IndexBehind) as refused:
        feed._refuse_if_hopeless({0: 101_000}, 2.0)
    assert 50 < refused.value.retry_after_s < 150 and "being built" in str(refused.value)
    feed.state = IndexState.LIVE  # caught up once: a request waits for it, whatever the gap
    feed._refuse_if_hopeless({0: 101_000}, 2.0)


def test_gateways_of_one_machine_never_share_a_file_and_reuse_released_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FIML_HOME", str(tmp_path))
    first, first_lock = claim_index_file("")
    second, second_lock = claim_index_file("")
    assert first != second and Path(first).parent == tmp_path / "gateway-candles"
    assert first_lock is not None and second_lock is not None
    first_lock.close()  # that gateway stopped: the next one takes its file
    third, third_lock = claim_index_file("")
    assert third == first
    configured = str(tmp_path / "mine" / "candles.sqlite3")
    path, lock = claim_index_file(configured)
    assert path == configured
    with pytest.raises(IndexFileBusy):
        claim_index_file(configured)
    assert claim_index_file(MEMORY) == (MEMORY, None)
    for held in (second_lock, third_lock, lock):
        assert held is not None
        held.close()
