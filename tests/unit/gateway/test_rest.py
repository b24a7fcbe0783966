"""``GET /ohlcv``: its range checks, the newest-N fold and the read, over a fake topic reader.

The reader fake keeps ``TopicReader``'s contract (``offsets_at`` is the first offset stamped at
or after a time) and yields one record a batch, so a test sees exactly where a read stopped.
No broker: tests/integration/test_rest_ohlcv.py runs the same reads against a real one.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace, TracebackType
from typing import Any, cast

import httpx
import pytest
from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError, UnknownTopicOrPartitionError
from fastapi import HTTPException
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway import create_app
from gateway.errors import RangeReadError
from gateway.rest import (
    DAY_MS,
    EARLY_PUBLICATION_MS,
    MAX_RANGE_MS,
    NewestCandles,
    candle_range,
    read_candles,
)
from gateway.service import Gateway
from gateway.settings import GatewaySettings
from schemas.codec import encode
from schemas.records import Interval, OHLCVUpdate
from schemas.times import MAX_EPOCH_MS

MIN = 60_000
T0 = 1_796_400_000_000 // DAY_MS * DAY_MS  # a UTC midnight: windows of every interval align


def candle(
    start: int,
    rev: int = 0,
    final: bool = False,
    symbol: str = "AAPL",
    interval: Interval = Interval.M1,
) -> OHLCVUpdate:
    close = 100.0 + start // MIN % 1000 + rev / 10
    return OHLCVUpdate(
        symbol=symbol,
        interval=interval,
        window_start_ms=start,
        window_end_ms=start + interval.ms,
        open=close,
        high=close,
        low=close,
        close=close,
        volume=1.0,
        trade_count=1,
        rev=rev,
        is_final=final,
        event_time_ms=start + rev,
    )


@dataclass(frozen=True)
class Msg:
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None


@dataclass
class FakeReader:
    """``TopicReader`` over in-memory partitions of ``(timestamp, key, value)``."""

    partitions: Sequence[Sequence[tuple[int, bytes | None, bytes | None]]]
    fail_at: str | None = None
    error: BaseException | None = None
    #: Every record yielded by ``read``, in order.
    yielded: list[Msg] = field(default_factory=list)
    closed: bool = False

    def _step(self, name: str) -> None:
        if self.fail_at == name and self.error is not None:
            raise self.error

    async def __aenter__(self) -> FakeReader:
        self._step("enter")
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.closed = True

    async def end_offsets(self) -> dict[int, int]:
        self._step("end_offsets")
        return {p: len(records) for p, records in enumerate(self.partitions)}

    async def offsets_at(self, time_ms: int) -> dict[int, int]:
        self._step("offsets_at")
        return {
            p: next((i for i, r in enumerate(records) if r[0] >= time_ms), len(records))
            for p, records in enumerate(self.partitions)
        }

    async def deleted_after(self, time_ms: int) -> dict[int, int]:
        self._step("deleted_after")
        return {}

    async def read(self, starts: dict[int, int], ends: dict[int, int]) -> AsyncIterator[list[Msg]]:
        for m in self._messages(starts, ends):
            if len(self.yielded) == 1:
                self._step("read")  # half way: after a batch was handed out
            self.yielded.append(m)
            yield [m]

    def _messages(self, starts: dict[int, int], ends: dict[int, int]) -> Iterator[Msg]:
        # Partitions in turn, one record each: a read across partitions, per-partition order.
        cursors = dict(starts)
        while any(cursors[p] < ends[p] for p in cursors):
            for p in sorted(cursors):
                if cursors[p] < ends[p]:
                    ts, key, value = self.partitions[p][cursors[p]]
                    yield Msg(p, cursors[p], ts, key, value)
                    cursors[p] += 1


def record(c: OHLCVUpdate, published: int | None = None) -> tuple[int, bytes, bytes]:
    """A candle as the worker writes it: keyed by symbol, stamped when published."""
    return (c.event_time_ms if published is None else published, c.symbol.encode(), encode(c))


def fake_gateway(reader: FakeReader, max_candles: int = 5_000) -> Gateway:
    hub = SimpleNamespace(reader=lambda logical: reader)
    return cast(
        Gateway, SimpleNamespace(settings=GatewaySettings(max_candles=max_candles), hub=hub)
    )


async def ohlcv(
    reader: FakeReader, start: int | None, end: int | None, max_candles: int = 5_000
) -> dict[str, Any]:
    return await read_candles(fake_gateway(reader, max_candles), "AAPL", Interval.M1, start, end)


def closes(answer: dict[str, Any]) -> list[tuple[int, int, bool]]:
    return [(c["window_start_ms"], c["rev"], c["is_final"]) for c in answer["candles"]]


# --- the range ------------------------------------------------------------------------------


def test_the_range_defaults_to_the_last_day() -> None:
    assert candle_range(None, None, T0) == (T0 + 1 - DAY_MS, T0 + 1)
    assert candle_range(T0, None, T0 + 5) == (T0, T0 + 6)
    assert candle_range(None, T0, 0) == (T0 - DAY_MS, T0)


def test_an_end_in_the_first_day_of_1970_starts_at_0() -> None:
    # end=1000 used to start at 1000 - 1 day: offsets_for_times(-86399000) raised, a 500.
    assert candle_range(None, 1000, T0) == (0, 1000)


@pytest.mark.parametrize(
    ("start", "end", "says"),
    [
        (-1, T0, "start must be epoch milliseconds"),
        (0, -5, "end must be epoch milliseconds"),
        (0, MAX_EPOCH_MS + 1, "end must be epoch milliseconds"),
        (10**30, None, "start must be epoch milliseconds"),
        (T0, T0, "must be after start"),
        (T0 + 1, T0, "must be after start"),
        (T0 + DAY_MS, None, "must be after start"),  # a start in the future, end defaults to now
        (T0 - MAX_RANGE_MS - 1, T0, "at most 31622400000 ms"),
        (0, MAX_EPOCH_MS, "at most"),
    ],
)
def test_bad_ranges_are_refused_with_the_reason(start: int, end: int | None, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        candle_range(start, end, T0)


def test_the_longest_range_and_the_last_instant_are_accepted() -> None:
    assert candle_range(T0 - MAX_RANGE_MS, T0, T0) == (T0 - MAX_RANGE_MS, T0)
    assert candle_range(MAX_EPOCH_MS - 1, MAX_EPOCH_MS, T0) == (MAX_EPOCH_MS - 1, MAX_EPOCH_MS)


# --- the newest N ---------------------------------------------------------------------------

revisions = st.lists(
    st.tuples(st.integers(0, 30), st.integers(0, 3), st.booleans(), st.integers(0, 9)),
    max_size=120,
)


@settings(max_examples=300)
@given(revisions, st.integers(1, 12))
def test_newest_candles_are_the_newest_windows_of_a_brute_force_fold(
    revs: list[tuple[int, int, bool, int]], limit: int
) -> None:
    folded = NewestCandles(limit)
    added = []
    for window, rev, final, tag in revs:
        c = candle(T0 + window * MIN, rev, final).model_copy(update={"volume": float(tag)})
        folded.add(c)
        added.append(c)
    # Reference: per window, the greatest (is_final, rev), ties to the last added.
    latest: dict[int, OHLCVUpdate] = {}
    for c in added:
        same = [o for o in added if o.window_start_ms == c.window_start_ms]
        latest[c.window_start_ms] = max(reversed(same), key=lambda o: (o.is_final, o.rev))
    want = [latest[s] for s in sorted(latest)][-limit:]
    assert folded.candles() == want
    assert folded.truncated == (len(latest) > limit)


def test_newest_candles_refuses_a_limit_below_one() -> None:
    with pytest.raises(ValueError):
        NewestCandles(0)


# --- the read -------------------------------------------------------------------------------


def worker_order(windows: int) -> list[OHLCVUpdate]:
    """What the worker writes for one symbol: an open revision of each window, then its final,
    which comes after the next window's first revision (the watermark passes end + grace)."""
    out: list[OHLCVUpdate] = []
    for k in range(windows):
        out.append(candle(T0 + k * MIN, 0))
        if k > 0:
            out.append(candle(T0 + (k - 1) * MIN, 1, final=True))
    out.append(candle(T0 + (windows - 1) * MIN, 1, final=True))
    return out


async def test_end_is_honoured_and_the_read_stops_at_the_final_that_closes_the_range() -> None:
    written = worker_order(10)
    other = [candle(T0 + k * MIN, 0, symbol="MSFT") for k in range(10)]
    reader = FakeReader([[record(c) for c in written], [record(c) for c in other]])
    answer = await ohlcv(reader, T0, T0 + 5 * MIN)
    assert closes(answer) == [(T0 + k * MIN, 1, True) for k in range(5)]
    assert answer["truncated"] is False and answer["next_end"] is None
    # Nothing after the final of the range's last window (4) was read.
    closing = next(
        i for i, c in enumerate(written) if c.is_final and c.window_start_ms == T0 + 4 * MIN
    )
    last = max(m.offset for m in reader.yielded if m.partition == 0)
    assert last == closing
    assert reader.closed


async def test_a_final_published_long_after_end_is_still_the_answer() -> None:
    # A quiet night, a worker outage or a rebuild: the final comes hours after the window.
    opened, final = candle(T0, 0), candle(T0, 1, final=True)
    reader = FakeReader([[record(opened), record(candle(T0 + MIN, 0)), record(final, T0 + DAY_MS)]])
    assert closes(await ohlcv(reader, T0, T0 + MIN)) == [(T0, 1, True)]


async def test_a_rebuilt_topic_stamped_after_the_range_is_read_whole() -> None:
    rebuilt_at = T0 + 3 * DAY_MS
    reader = FakeReader([[record(c, rebuilt_at) for c in worker_order(6)]])
    answer = await ohlcv(reader, T0 + MIN, T0 + 3 * MIN)
    assert closes(answer) == [(T0 + MIN, 1, True), (T0 + 2 * MIN, 1, True)]


async def test_a_revision_published_before_its_window_by_a_fast_clock_is_read() -> None:
    early = T0 - EARLY_PUBLICATION_MS
    reader = FakeReader([[record(candle(T0, 0), early), record(candle(T0, 1, final=True))]])
    assert closes(await ohlcv(reader, T0, T0 + MIN)) == [(T0, 1, True)]


async def test_an_open_range_is_read_to_the_end_with_the_open_revisions() -> None:
    written = [candle(T0, 0), candle(T0, 1, final=True), candle(T0 + MIN, 0), candle(T0 + MIN, 1)]
    reader = FakeReader([[record(c) for c in written]])
    assert closes(await ohlcv(reader, T0, T0 + 10 * MIN)) == [(T0, 1, True), (T0 + MIN, 1, False)]
    assert len(reader.yielded) == len(written)


async def test_records_that_are_not_candles_of_the_series_are_skipped() -> None:
    reader = FakeReader(
        [
            [
                (T0, b"\xff\xfe", b"{}"),  # a key that is not UTF-8
                (T0, b"AAPL", None),  # a tombstone
                (T0, b"AAPL", b"not json"),
                (T0, None, encode(candle(T0, 0, symbol="MSFT"))),
                (T0, b"AAPL", encode(candle(T0, 0, interval=Interval.M5))),
                record(candle(T0, 3)),
            ]
        ]
    )
    assert closes(await ohlcv(reader, T0, T0 + MIN)) == [(T0, 3, False)]


async def test_a_long_range_answers_its_newest_candles_and_pages_back() -> None:
    written = [record(c) for c in worker_order(12)]
    pages: list[list[tuple[int, int, bool]]] = []
    end: int | None = T0 + 12 * MIN
    while end is not None:
        answer = await ohlcv(FakeReader([written]), T0, end, max_candles=5)
        pages.append(closes(answer))
        assert answer["truncated"] is (answer["next_end"] is not None)
        end = answer["next_end"]
    assert [len(p) for p in pages] == [5, 5, 2]
    assert pages[0][0][0] == T0 + 7 * MIN  # the newest five: windows 7..11
    assert [c for page in reversed(pages) for c in page] == [
        (T0 + k * MIN, 1, True) for k in range(12)
    ]


@st.composite
def worker_streams(draw: st.DrawFn) -> list[tuple[int, bytes, bytes]]:
    """One symbol's candles in an order the worker may write them: open revisions of a window,
    its final after them (at once or after the next window's first revision), finals in window
    order; stamped anywhere from EARLY_PUBLICATION_MS before the window to days after it, in
    no particular order; other symbols' records between them."""
    windows = draw(st.integers(1, 12))
    ordered: list[OHLCVUpdate] = []
    pending: OHLCVUpdate | None = None
    for k in range(windows):
        opens = draw(st.integers(0, 3))
        for rev in range(opens):
            ordered.append(candle(T0 + k * MIN, rev))
            if pending is not None:
                ordered.append(pending)
                pending = None
        if pending is not None:
            ordered.append(pending)
        pending = candle(T0 + k * MIN, opens, final=True)
        if draw(st.booleans()):
            ordered.append(pending)
            pending = None
    if pending is not None and draw(st.booleans()):
        ordered.append(pending)  # else the last window is still open
    out = []
    for c in ordered:
        delay = draw(st.integers(-EARLY_PUBLICATION_MS, 3 * DAY_MS))
        out.append(record(c, c.window_start_ms + delay))
        if draw(st.booleans()):
            out.append(record(candle(T0, 0, symbol="MSFT"), draw(st.integers(T0, T0 + DAY_MS))))
    return out


@settings(max_examples=200, deadline=None)
@given(worker_streams(), st.integers(-2, 13), st.integers(1, 14), st.integers(1, 6))
def test_any_range_of_any_worker_stream_is_the_brute_force_answer(
    written: list[tuple[int, bytes, bytes]], first: int, length: int, limit: int
) -> None:
    start, end = T0 + first * MIN + 7, T0 + (first + length) * MIN - 3  # not aligned on purpose
    answer = asyncio.run(ohlcv(FakeReader([written]), start, end, max_candles=limit))
    latest: dict[int, OHLCVUpdate] = {}
    for _, key, value in written:
        c = OHLCVUpdate.model_validate_json(value)
        if key == b"AAPL" and start <= c.window_start_ms < end:
            held = latest.get(c.window_start_ms)
            if held is None or (c.is_final, c.rev) >= (held.is_final, held.rev):
                latest[c.window_start_ms] = c
    want = [latest[s] for s in sorted(latest)]
    assert closes(answer) == [(c.window_start_ms, c.rev, c.is_final) for c in want[-limit:]]
    assert answer["truncated"] == (len(want) > limit)


# --- failures -------------------------------------------------------------------------------


@pytest.mark.parametrize("stage", ["enter", "offsets_at", "end_offsets", "deleted_after", "read"])
@pytest.mark.parametrize(
    "error",
    [
        RangeReadError("no progress reading fiml.ohlcv within the timeout"),
        KafkaConnectionError("Unable to bootstrap from [('127.0.0.1', 1)]"),
        KafkaTimeoutError(),
        UnknownTopicOrPartitionError(),
        TimeoutError(),  # asyncio.TimeoutError since 3.11
        ConnectionResetError("reset by peer"),
    ],
    ids=lambda e: type(e).__name__,
)
async def test_every_failure_of_the_broker_or_the_read_is_a_503(
    stage: str, error: BaseException
) -> None:
    reader = FakeReader([[record(c) for c in worker_order(3)]], fail_at=stage, error=error)
    with pytest.raises(HTTPException) as caught:
        await ohlcv(reader, T0, T0 + 10 * MIN)
    assert caught.value.status_code == 503
    assert (
        type(error).__name__ in caught.value.detail and "cannot read candles" in caught.value.detail
    )


async def test_a_bug_half_way_is_an_error_not_a_partial_answer() -> None:
    reader = FakeReader([[record(c) for c in worker_order(3)]], "read", ZeroDivisionError())
    with pytest.raises(ZeroDivisionError):
        await ohlcv(reader, T0, T0 + 10 * MIN)


# --- through the app ------------------------------------------------------------------------


@pytest.fixture
async def client(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[httpx.AsyncClient]:
    """The gateway's app with its hub's reader replaced by a fake one (the hub is not started:
    no broker)."""
    app = create_app(GatewaySettings(bootstrap="127.0.0.1:1"))
    reader = FakeReader([[record(c) for c in worker_order(3)]])
    monkeypatch.setattr(app.state.gateway.hub, "reader", lambda logical: reader)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as http:
        yield http


async def test_end_1000_is_answered_not_a_500(client: httpx.AsyncClient) -> None:
    r = await client.get("/ohlcv/AAPL?end=1000")
    assert r.status_code == 200, r.text
    assert r.json()["start"] == 0 and r.json()["end"] == 1000 and r.json()["candles"] == []


@pytest.mark.parametrize(
    "query",
    [
        "end=-1",
        "start=-1",
        f"end={MAX_EPOCH_MS + 1}",
        "end=1e3",
        "start=5&end=5",
        f"start={T0}&end={T0 - 1}",
        f"start=0&end={MAX_RANGE_MS + 1}",
        "end=99999999999999999999999999",
        "interval=2m",
    ],
)
async def test_bad_parameters_are_422_with_the_reason(
    client: httpx.AsyncClient, query: str
) -> None:
    r = await client.get(f"/ohlcv/AAPL?{query}")
    assert r.status_code == 422, r.text
    assert r.json()["detail"]


async def test_the_app_answers_the_read(client: httpx.AsyncClient) -> None:
    r = await client.get(f"/ohlcv/AAPL?interval=1m&start={T0}&end={T0 + 2 * MIN}")
    assert r.status_code == 200, r.text
    body = r.json()
    assert [(c["window_start_ms"], c["is_final"]) for c in body["candles"]] == [
        (T0, True),
        (T0 + MIN, True),
    ]
    assert body["truncated"] is False and body["next_end"] is None and body["retained_from"] is None
