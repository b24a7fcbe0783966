"""The compiled core (``fiml_arbcore``, native/arbcore) against the Python reference.

The same raw records go to ``Processor`` and to ``CompiledProcessor``; every output (topic,
key, value, partition, headers), every mark and every counter must be byte-identical: for the
synthetic workloads of the quality report, Binance's real XRP/ETH trades, and hypothesis
streams with late ticks, gaps of hours and years, outliers, extreme floats, duplicate trades,
history, records out of their time bounds, malformed and schema-invalid records, records in
non-canonical JSON (the strict parser's edges), several partitions, and restarts from a mark
at any cut.
"""

from __future__ import annotations

import os
import random
import sys
from collections.abc import Iterable, Sequence
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents.arbitration.core.processor import Output, Processor
from agents.arbitration.quality import scenarios
from agents.arbitration.settings import ArbitrationSettings
from agents.arbitration.synthetic import ProviderModel, synthetic_ticks, trade_of
from schemas.codec import RECORD_TYPES, decode, encode
from schemas.records import AssetType, RawTick
from schemas.times import MAX_EPOCH_MS
from tests.unit.arbitration.test_binance_klines import binance_trades
from tests.unit.arbitration.test_restart_from_a_mark import LOG

if os.environ.get("FIML_ARB_ENGINE") == "python":  # a machine without a compiler chose so
    pytest.importorskip("fiml_arbcore", reason="FIML_ARB_ENGINE=python: no compiled core")

from agents.arbitration.engine import (
    ArbitrationEngine,
    CompiledProcessor,
    EngineUnavailableError,
    make_processor,
)

#: (partition, key, value, offset): one record of ``fiml.raw`` as fetched.
Record = tuple[int, bytes | None, bytes, int]

START = 1_764_892_800_000  # 2025-12-05T00:00:00Z
HOUR = 3_600_000
YEAR = 365 * 24 * HOUR


def engines(s: ArbitrationSettings | None = None) -> tuple[Processor, CompiledProcessor]:
    s = s or ArbitrationSettings()
    return Processor(s), CompiledProcessor(s)


def feed(py: Processor, rs: CompiledProcessor, records: Sequence[Record]) -> None:
    """The reference one record at a time; the core a fetch per run of one partition."""
    for p, key, value, offset in records:
        py.process(key, value, p, offset)
    run: list[tuple[bytes | None, bytes, int]] = []
    current = -1
    for p, key, value, offset in records:
        if p != current and run:
            rs.process_many(current, run)
            run = []
        current = p
        run.append((key, value, offset))
    if run:
        rs.process_many(current, run)


def assert_same(
    py: Processor, rs: CompiledProcessor, partitions: Iterable[int], counters: bool = True
) -> int:
    """Outputs, counters (of one engine's life: not after a restart) and marks equal; returns
    how many outputs were compared."""
    expected, got = py.drain_partitions(), rs.drain_partitions()
    for p in sorted(set(expected) | set(got)):
        want, have = expected.get(p, []), got.get(p, [])
        for i, (a, b) in enumerate(zip(want, have, strict=False)):
            assert b == a, f"partition {p}, output {i}"
        assert len(have) == len(want), f"partition {p}"
    if counters:
        names = ("poison", "out_of_time", "invalid", "skipped")
        assert [getattr(rs, c) for c in names] == [getattr(py, c) for c in names]
    assert rs.late_ticks() == py.late_ticks()
    assert set(rs.marks) == py.marks
    for p in sorted(partitions):
        assert rs.resume_offset(p) == py.resume_offset(p)
        assert rs.mark(p) == py.mark(p), f"mark of partition {p}"
    return sum(len(v) for v in expected.values())


def one_partition(values: Sequence[bytes]) -> list[Record]:
    return [(0, None, v, offset) for offset, v in enumerate(values)]


# -- recorded workloads ------------------------------------------------------------------------


def test_the_restart_log_with_trades_and_poison() -> None:
    py, rs = engines()
    feed(py, rs, one_partition(LOG))
    assert assert_same(py, rs, [0]) > 5_000


@pytest.mark.parametrize("scenario", scenarios(duration_ms=120_000), ids=lambda s: s.name)
def test_the_quality_scenarios(scenario: Any) -> None:
    ticks, _ = synthetic_ticks(
        list(scenario.symbols),
        list(scenario.providers),
        scenario.start_ms,
        scenario.duration_ms,
        seed=scenario.seed,
        step_vol=scenario.step_vol,
    )
    py, rs = engines()
    feed(py, rs, one_partition([encode(t) for t in ticks]))
    assert assert_same(py, rs, [0]) > 1_000
    for symbol in scenario.symbols:
        assert rs.symbol_state_bytes(0, symbol) == py.symbol_state(0, symbol).to_bytes()


def test_binance_trades() -> None:
    values = [encode(t) for t in binance_trades()]
    py, rs = engines()
    feed(py, rs, one_partition(values))
    assert assert_same(py, rs, [0]) > 1_000


def test_candles_that_end_after_the_year_9999_are_dead_lettered_alike() -> None:
    """A window that holds 9999-12-31T23:59:59.999 ends in the year 10000, after
    ``MAX_EPOCH_MS``: its candle would not be a valid OHLCVUpdate. Both engines dead-letter it
    as invalid and write the rest (the price, the health, the 1s candles that end in time)."""
    values = [
        encode(
            RawTick(
                provider="ab"[i % 2],
                symbol="X/USD",
                provider_symbol="XUSD",
                asset_type=AssetType.CRYPTO,
                price=100.0 + i % 3,
                event_time_ms=(t := MAX_EPOCH_MS - 9_000 + 700 * i),
                ingest_time_ms=t,
                seq=i,
            )
        )
        for i in range(12)
    ]
    reference = Processor(ArbitrationSettings())
    reference.process_many(0, [(None, v, offset) for offset, v in enumerate(values)])
    outputs = reference.drain()
    dead = [dict(h or []) for topic, _k, _v, _p, h in outputs if topic == "fiml.deadletter"]
    assert dead and reference.invalid == len(dead)
    assert all(d["fiml-error"].startswith(b"invalid OHLCVUpdate: window_end_ms") for d in dead)
    for topic, _key, value, _p, _h in outputs:
        if topic in RECORD_TYPES:
            decode(RECORD_TYPES[topic], value)  # every record written is valid
    py, rs = engines()
    feed(py, rs, one_partition(values))
    assert assert_same(py, rs, [0]) == len(outputs)


# -- generated streams -------------------------------------------------------------------------

EXTREME = [5e-324, 1e-300, 2.2250738585072014e-308, 1e300, sys.float_info.max, 1e-7, 1e16]
SYMBOLS = ["BTC/USD", "ETH/USD", "Ω/€"]
PROVIDERS = ["a", "b", "c", "dd"]


def _price(rng: random.Random, base: float) -> float | int:
    roll = rng.random()
    if roll < 0.05:
        return rng.choice(EXTREME)
    if roll < 0.1:
        return base * rng.choice([1.5, 0.5, 1.01, 0.99])  # outliers
    if roll < 0.13:
        return int(base)  # an int where a float is: pydantic takes it
    return base * (1 + rng.gauss(0, 2e-4))


def _valid(rng: random.Random, t: int, seq: int) -> dict[str, Any]:
    symbol = rng.choice(SYMBOLS)
    base = {"BTC/USD": 50_000.0, "ETH/USD": 3_000.0, "Ω/€": 0.25}[symbol]
    rec: dict[str, Any] = {
        "provider": rng.choice(PROVIDERS),
        "symbol": symbol,
        "provider_symbol": symbol.replace("/", ""),
        "asset_type": "crypto" if rng.random() < 0.9 else "equity",
        "price": _price(rng, base),
        "event_time_ms": t,
        "ingest_time_ms": t + rng.choice([0, 0, 5, 120]),
        "seq": seq,
    }
    if rng.random() < 0.3:  # a trade
        rec["trade_id"] = str(rng.randrange(30))  # few ids: duplicates
        rec["amount"] = rng.choice([0.5, 1.0, 0.0, 2.5, 1e300, sys.float_info.max, -0.0, 3])
        rec["side"] = rng.choice(["buy", "sell", None])
        if rng.random() < 0.02:
            rec["trade_id"] = "x" * 64  # with the provider's prefix, too long a TradeUpdate id
    else:
        if rng.random() < 0.5:
            p = float(rec["price"])
            rec["bid"], rec["ask"] = p * 0.9999, p * 1.0001
        if rng.random() < 0.05:
            rec["bid"] = rng.choice(EXTREME)
    if rng.random() < 0.08:
        rec["history"] = True
    return rec


def _malformed(rng: random.Random, rec: dict[str, Any]) -> bytes:
    """A record each engine must refuse (or read) the same way."""
    kind = rng.randrange(9)
    if kind == 0:
        return b'{"not": "a record"}'
    if kind == 1:
        return orjson.dumps(rec)[:-3]  # cut short
    if kind == 2:
        return orjson.dumps({**rec, "price": -1.0})
    if kind == 3:
        return orjson.dumps({**rec, "extra": 1})
    if kind == 4:
        return orjson.dumps({**rec, "event_time_ms": float(rec["event_time_ms"])})
    if kind == 5:
        return orjson.dumps({**rec, "symbol": ""})
    if kind == 6:
        return orjson.dumps({**rec, "price": "1.5"})
    if kind == 7:
        return b"\xff\xfe"
    return orjson.dumps({**rec, "seq": -1})


def _unusual(rng: random.Random, rec: dict[str, Any]) -> bytes:
    """A valid record in a form the strict parser may leave to Python."""
    kind = rng.randrange(7)
    if kind == 0:
        return orjson.dumps(rec, option=orjson.OPT_INDENT_2)
    if kind == 1:  # keys in another order
        items = list(rec.items())
        rng.shuffle(items)
        return orjson.dumps(dict(items))
    if kind == 2:  # a duplicate key: pydantic takes the last
        body = orjson.dumps(rec)
        return body[:-1] + b',"price":' + orjson.dumps(rec["price"]) + b"}"
    if kind == 3:  # escapes
        return orjson.dumps(rec).replace(b'"provider"', b'"provid\\u0065r"')
    if kind == 4:  # a big seq
        return orjson.dumps({**rec, "seq": 0}).replace(b'"seq":0', b'"seq":' + b"9" * 30)
    if kind == 5:  # a tick whose string value is "trade_id"
        return orjson.dumps({**rec, "market": "trade_id"})
    return orjson.dumps({**rec, "v": 2, "market": None, "provider_symbol": "x\\\u00e9\n"})


def stream(seed: int, n: int, partitions: int, keyed: bool = False) -> list[Record]:
    """``n`` raw records over ``partitions`` partitions, in offset order per partition;
    ``keyed``: each symbol in one partition, as ingestion keys them (else anywhere, which the
    engines must still agree on)."""
    rng = random.Random(seed)
    t = START + rng.randrange(HOUR)
    offsets = [0] * partitions
    out: list[Record] = []
    for i in range(n):
        roll = rng.random()
        if roll < 0.04:
            t -= rng.randrange(1, 300_000)  # late, beyond the grace period
        elif roll < 0.05:
            t += rng.choice([HOUR, 5 * HOUR, YEAR, 30 * YEAR])  # gaps
        else:
            t += rng.randrange(0, 2_500)
        t = min(max(t, 0), MAX_EPOCH_MS - 10_000)
        rec = _valid(rng, t, i)
        kind = rng.random()
        if kind < 0.04:
            value = _malformed(rng, rec)
        elif kind < 0.08:
            value = _unusual(rng, rec)
        elif kind < 0.1:  # out of its time bounds: ahead, or too old for live
            shift = rng.choice([-400_000, 2 * HOUR, 100 * HOUR])
            value = orjson.dumps({**rec, "ingest_time_ms": max(t + shift, 0), "history": False})
        else:
            value = orjson.dumps(rec)
        p = rng.randrange(partitions)
        if keyed:
            p = SYMBOLS.index(str(rec["symbol"])) % partitions
        key = None if rng.random() < 0.5 else str(rec["symbol"]).encode()
        out.append((p, key, value, offsets[p]))
        offsets[p] += 1 if rng.random() < 0.97 else rng.choice([0, 3])  # replays and skips
    return out


SMALL = ArbitrationSettings(max_symbols=2, throttle_ms=0, dedup_ms=3_000, health_every_ms=700)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32),
    n=st.integers(1, 600),
    partitions=st.integers(1, 3),
    small=st.booleans(),
)
def test_generated_streams(seed: int, n: int, partitions: int, small: bool) -> None:
    py, rs = engines(SMALL if small else None)
    feed(py, rs, stream(seed, n, partitions))
    assert_same(py, rs, range(partitions))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32), n=st.integers(2, 500), cuts=st.lists(st.floats(0, 1), max_size=3)
)
def test_restarts_from_a_mark_at_any_cut(seed: int, n: int, cuts: list[float]) -> None:
    """The reference runs through; the core is marked, rebuilt from its mark and goes on at
    each cut (a crash right after a commit): the outputs and the marks are the same."""
    records = stream(seed, n, 2)  # a symbol's records in either partition
    py, rs = engines()
    start, restarted = 0, False  # counters are of one engine's life
    for cut in [*sorted({int(c * len(records)) for c in cuts}), len(records)]:
        feed(py, rs, records[start:cut])
        start = cut
        assert_same(py, rs, range(2), counters=not restarted)
        marks = {p: rs.mark(p) for p in range(2)}
        rs = CompiledProcessor(ArbitrationSettings())
        for p, mark in marks.items():
            rs.restore(p, mark)
        restarted = True


def _one_symbol_in_two_partitions() -> list[Record]:
    """BTC/USD's ticks and trades alternately in partitions 0 and 1 (a producer that keys them
    differently), ETH/USD's in partition 0 only."""
    providers = [ProviderModel("alpha", every_ms=700), ProviderModel("bravo", every_ms=1100)]
    ticks, _ = synthetic_ticks(["BTC/USD", "ETH/USD"], providers, START, 40_000)
    offsets = [0, 0]
    records: list[Record] = []
    for i, tick in enumerate(ticks):
        values = [encode(tick)]
        if i % 5 == 2:
            values.append(encode(trade_of(tick, f"t{i}", 0.5)))
        for value in values:
            p = len(records) % 2 if tick.symbol == "BTC/USD" else 0
            records.append((p, tick.symbol.encode(), value, offsets[p]))
            offsets[p] += 1
    return records


def test_one_symbol_in_two_partitions_restarts_alike_from_a_mark_at_every_cut() -> None:
    """Each partition holds its own state of a symbol whose records come in two partitions, and
    marking one partition must not take the other's changes for saved. A run that marks both
    partitions after every record (a commit each) is restarted from the marks of every cut: the
    restarted outputs and marks equal the uninterrupted run's, in both engines, which agree byte
    for byte."""
    records = _one_symbol_in_two_partitions()
    py, rs = engines()
    so_far: dict[int, list[Output]] = {0: [], 1: []}
    cuts: list[tuple[dict[int, list[Output]], dict[int, bytes]]] = []  # outputs so far, marks
    for cut in range(len(records) + 1):
        feed(py, rs, records[cut - 1 : cut] if cut else [])
        outputs = py.drain_partitions()
        assert rs.drain_partitions() == outputs
        so_far = {p: so_far[p] + outputs.get(p, []) for p in so_far}
        marks = {p: py.mark(p) for p in (0, 1)}
        assert {p: rs.mark(p) for p in (0, 1)} == marks
        cuts.append((so_far, marks))
    expected, final_marks = cuts[-1]
    for cut, (committed, marks) in enumerate(cuts[:-1]):
        again_py, again_rs = engines()
        for p, mark in marks.items():
            again_py.restore(p, mark)
            again_rs.restore(p, mark)
        feed(again_py, again_rs, records[cut:])
        outputs = again_py.drain_partitions()
        assert again_rs.drain_partitions() == outputs, f"cut {cut}"
        for p in (0, 1):
            assert committed[p] + outputs.get(p, []) == expected[p], f"cut {cut}, partition {p}"
            assert again_py.mark(p) == again_rs.mark(p) == final_marks[p], f"cut {cut}"


def _older(mark: bytes, version: int) -> bytes:
    """``mark`` as an older build wrote it: a positional version 2 checkpoint whose states are
    of ``version`` (2: no volatility, copies or lags, statistics of 8 fields; 3: no lags,
    statistics of 16 fields)."""
    saved = orjson.loads(mark)
    states = []
    for state in saved["states"]:
        if version == 2:
            stats = {
                p: [0.0, *s[9:11], s[11], s[12], s[13], s[14], s[15]] for p, s in state[6].items()
            }
            state = [2, *state[1:6], stats, *state[7:11]]
        else:
            state = [3, *state[1:6], {p: s[:16] for p, s in state[6].items()}, *state[7:13]]
        states.append(state)
    return orjson.dumps([2, saved["applied"], saved["watermark"], states])


@pytest.mark.parametrize("version", [2, 3])
def test_marks_of_older_versions_restore_alike(version: int) -> None:
    records = stream(7, 900, 2, keyed=True)
    py, rs = engines()
    feed(py, rs, records[:450])
    assert_same(py, rs, range(2))
    marks = {p: _older(py.mark(p), version) for p in range(2)}
    py, rs = engines()
    for p, mark in marks.items():
        py.restore(p, mark)
        rs.restore(p, mark)
    assert_same(py, rs, range(2))
    feed(py, rs, records[450:])
    assert assert_same(py, rs, range(2)) > 100


_TICK = (
    b'{"provider":"a","symbol":"S","provider_symbol":"S","asset_type":"crypto","price":PRICE,'
    b'"event_time_ms":ET,"ingest_time_ms":1764892800000,"seq":SEQ EXTRA}'
)


def _tick(price: bytes = b"1.5", et: bytes = b"1764892800000", seq: bytes = b"1") -> bytes:
    return _TICK.replace(b"PRICE", price).replace(b"ET", et).replace(b"SEQ", seq)


_PRICES: tuple[bytes, ...] = (b"-0", b"0", b"1e400", b"1e-400", b"4.9e-324")
_PRICES += (b"2.4703282292062328e-324",)
_PRICES += (b"1.7976931348623158e308", b"1.7976931348623159e308", b"9007199254740993")
_PRICES += (b"9223372036854775807", b"9223372036854775808", b"-1", b"1.", b".5", b"01")
_PRICES += (b"1E+5", b"1.0e-5", b"123456789012345678901234567890")
_TIMES = (b"-0", b"1764892800000.0", b"1.7648928e12", b"253402300799999", b"253402300800000")

#: The strict parser's edges: numbers at the limits of i64 and of floats, -0, JSON's number
#: grammar, strict ints and bools, escapes and surrogates, names of 64 characters and more.
EDGES = [
    *(_tick(price=p).replace(b" EXTRA", b"") for p in _PRICES),
    *(_tick(et=et).replace(b" EXTRA", b"") for et in _TIMES),
    *(
        _tick(seq=q).replace(b" EXTRA", b"")
        for q in [b"-0", b"0", b"-1", b"1.0", b"99999999999999999999999", b"true"]
    ),
    *(
        _tick().replace(b" EXTRA", extra)
        for extra in [
            b',"trade_id":"x","amount":-0,"side":"buy"',
            b',"trade_id":"x","amount":-0.0',
            b',"trade_id":"x","amount":1e-400',
            b',"trade_id":"' + b"x" * 64 + b'","amount":1',
            b',"trade_id":"","amount":1',
            b',"trade_id":"x","amount":1,"bid":2',
            b',"side":"buy"',
            b',"history":1',
            b',"history":true',
            b',"v":0',
            b',"v":true',
            b',"v":99999999999999999999999',
            b',"market":"\\ud800"',
            b',"market":"\\ud83d\\ude00"',
            b',"market":"\\u0000\\/\\b"',
            b',"bid":null,"ask":2',
            b',"volume":-0.0',
            b',"asset_type":"fx"',
            b"",
        ]
    ),
    b" \n" + _tick().replace(b" EXTRA", b"") + b"\n ",
    _tick()
    .replace(b" EXTRA", b"")
    .replace(b'"S","provider_symbol"', '"{}","provider_symbol"'.format("é" * 64).encode()),
    _tick()
    .replace(b" EXTRA", b"")
    .replace(b'"S","provider_symbol"', '"{}","provider_symbol"'.format("😀" * 65).encode()),
]


@pytest.mark.parametrize("value", EDGES)
def test_the_strict_parsers_edges(value: bytes) -> None:
    py, rs = engines()
    for engine in (py, rs):
        engine.process(None, value, 0, 0)
        engine.process(None, _tick(et=b"1764892801000").replace(b" EXTRA", b""), 0, 1)
    assert_same(py, rs, [0])


def test_a_record_without_a_value_is_dead_lettered_alike() -> None:
    """A tombstone (value None) is not a raw record: both engines dead-letter it."""
    py, rs = engines()
    py.process(b"BTC/USD", None, 0, 0)  # type: ignore[arg-type]
    py.process(None, None, 0, 1)  # type: ignore[arg-type]
    rs.process(b"BTC/USD", None, 0, 0)  # type: ignore[arg-type]
    rs.process_many(0, [(None, None, 1)])  # type: ignore[list-item]
    assert assert_same(py, rs, [0]) == 2


BAD_MARKS = [
    b"nonsense",
    b'{"v": 9}',
    b"[2, 1]",
    b"[]",
    b"null",
    b'{"v": 3, "applied": 1.5}',
    b'{"v": 3, "applied": 1, "watermark": 2}',
    b'{"v": 3, "applied": 1, "watermark": 2, "states": [[4, "S"]]}',
    b'{"v": 3, "applied": 1, "watermark": 2, "states": [[4, "S", "crypto", 0, [], [], {}, 1]]}',
    b'{"v": 3, "applied": 1, "watermark": 2, "states": [7]}',
]


@pytest.mark.parametrize("mark", BAD_MARKS)
def test_a_bad_mark_raises_the_references_error(mark: bytes) -> None:
    py, rs = engines()
    with pytest.raises(Exception) as want:
        py.restore(0, mark)
    with pytest.raises(type(want.value)) as got:
        rs.restore(0, mark)
    assert str(got.value) == str(want.value)


def test_the_engine_setting_chooses() -> None:
    python: ArbitrationEngine = make_processor(ArbitrationSettings(engine="python"))
    compiled: ArbitrationEngine = make_processor(ArbitrationSettings())  # mypy: both are one
    assert isinstance(python, Processor)
    assert isinstance(compiled, CompiledProcessor)


def test_process_many_feeds_either_engine() -> None:
    py, rs = engines()
    batch = [(None, value, offset) for offset, value in enumerate(LOG[:300])]
    py.process_many(0, batch)
    rs.process_many(0, batch)
    assert assert_same(py, rs, [0]) > 100


def test_a_missing_core_says_how_to_build_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "fiml_arbcore", None)
    with pytest.raises(EngineUnavailableError, match="make setup"):
        CompiledProcessor(ArbitrationSettings())
