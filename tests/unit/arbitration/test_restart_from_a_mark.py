"""One order: a run restarted from any mark gives the outputs of a run never interrupted.

The worker commits a partition's outputs and its mark in one transaction; a crash aborts
everything since the last commit, and the next owner restores the mark and applies the records
after it again. That gives the uninterrupted run's records only if the processor's outputs after
a restore equal those it would have given without one, whatever the cut, for ticks, trades,
poison and several symbols in a partition (their candles close on the partition's watermark).
Pure: the processor, no broker; the worker's part is in
``tests/e2e/test_chaos_exactly_once.py``.
"""

from __future__ import annotations

import random

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.arbitration.core.processor import Output, Processor
from agents.arbitration.engine import make_processor
from agents.arbitration.rebuild import DERIVED
from agents.arbitration.settings import ArbitrationSettings
from agents.arbitration.synthetic import ProviderModel, synthetic_ticks, trade_of
from schemas.codec import encode
from schemas.records import RawTick, RawTrade

START = 1_764_892_800_000  # 2025-12-05T00:00:00Z


def raw_log() -> list[bytes]:
    """Four minutes of two symbols from three providers, a trade every fifth tick, a poison
    record now and then: one partition of ``fiml.raw`` as ingestion writes it."""
    models = [
        ProviderModel("alpha", noise_bps=2, every_ms=700),
        ProviderModel("bravo", noise_bps=4, every_ms=1100),
        ProviderModel("charlie", noise_bps=8, every_ms=1700),
    ]
    ticks, _ = synthetic_ticks(["BTC/USD", "ETH/USD"], models, START, 240_000)
    rng = random.Random(5)
    records: list[RawTick | RawTrade] = []
    for i, t in enumerate(ticks):
        records.append(t)
        if i % 5 == 2:
            records.append(trade_of(t, f"t{i}", round(rng.uniform(0.1, 2.0), 3), seq=i))
    log = [encode(r) for r in records]
    for i in range(50, len(log), 211):
        log.insert(i, b'{"not": "a record"}')
    return log


LOG = raw_log()


def uninterrupted() -> list[Output]:
    proc = Processor(ArbitrationSettings())
    for offset, value in enumerate(LOG):
        proc.process(None, value, 0, offset)
    return proc.drain()


EXPECTED = uninterrupted()


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(0, len(LOG)), min_size=1, max_size=6, unique=True), st.integers(0, 400))
def test_restarts_from_marks_give_the_uninterrupted_outputs(commits: list[int], lost: int) -> None:
    """At each commit point the outputs so far and the mark are kept; then a crash loses
    ``lost`` more records' work (an aborted transaction) and a new processor restores the mark
    and goes on from the record after it."""
    committed: list[Output] = []
    mark: bytes | None = None
    proc = Processor(ArbitrationSettings())
    proc.restore(0, None)
    start = 0
    for cut in sorted(commits):
        for offset in range(start, cut):
            proc.process(None, LOG[offset], 0, offset)
        start = cut
        committed += proc.drain()
        mark = proc.mark(0)
        for extra in range(cut, min(cut + lost, len(LOG))):  # work the crash throws away
            proc.process(None, LOG[extra], 0, extra)
        proc = Processor(ArbitrationSettings())
        proc.restore(0, mark)
        resume = proc.resume_offset(0)
        assert resume == (cut if cut else None)
        # the consumer may start before the mark (a group offset behind it): skipped
        for again in range(max(0, cut - 3), cut):
            proc.process(None, LOG[again], 0, again)
        assert proc.drain() == []
    for offset in range(start, len(LOG)):
        proc.process(None, LOG[offset], 0, offset)
    committed += proc.drain()
    assert committed == EXPECTED


def test_the_log_exercises_every_output() -> None:
    topics = {out[0] for out in EXPECTED}
    assert topics >= set(DERIVED)
    assert any(b'"is_final":true' in out[2] for out in EXPECTED)


def test_the_marks_carry_what_is_learned() -> None:
    """So that the restarts above restore it: every provider's lag learner has compared and
    holds references waiting for later quotes, and the drift and noises have samples."""
    from agents.arbitration.core.lags import MIN_SAMPLES

    proc = Processor(ArbitrationSettings())
    for offset, value in enumerate(LOG):
        proc.process(None, value, 0, offset)
    for symbol in ("BTC/USD", "ETH/USD"):
        state = proc.symbol_state(0, symbol)
        assert set(state.lags) == {"alpha", "bravo", "charlie"}
        assert all(lag.samples > MIN_SAMPLES and lag.ref_times for lag in state.lags.values())
        assert state.volatility.samples > 0
        assert all(s.samples > 0 for s in state.stats.values())


def test_a_mark_of_another_version_is_refused() -> None:
    proc = Processor(ArbitrationSettings())
    for offset, value in enumerate(LOG[:30]):
        proc.process(None, value, 0, offset)
    mark = proc.mark(0)
    proc.restore(1, mark)  # any partition number: the mark holds the states
    assert proc.resume_offset(1) == 30
    try:
        proc.restore(0, b"[1,0,[],[]]")
    except ValueError as exc:
        assert "version" in str(exc)
    else:
        raise AssertionError("a version 1 mark was restored")


def test_a_state_saved_before_issue_16_restores_with_priors() -> None:
    """A symbol state of version 2 (quotes of five fields, statistics of eight, no volatility
    or pairs) restores: what it knew of timing stays, the noise starts from the prior."""
    import orjson

    from agents.arbitration.core.reliability import PRIOR_NOISE_VAR
    from agents.arbitration.core.state import SymbolState

    old = SymbolState("BTC/USD", "crypto", 0).to_bytes()
    saved = orjson.loads(old)[:11]
    saved[0] = 2
    saved[5] = [["a", 100.0, 1_000, 99.9, 100.1]]
    saved[6] = {"a": [3.0, 250.0, 10.0, 1_000, 7, 1, 900, "up"]}
    st = SymbolState.from_bytes(orjson.dumps(saved))
    assert st.quotes["a"].price == 100.0 and st.quotes["a"].news_ms == 1_000
    stats = st.stats["a"]
    assert (stats.gap_ms, stats.ticks, stats.last_state) == (250.0, 7, "up")
    assert stats.noise_var == PRIOR_NOISE_VAR and stats.samples == 0
    assert SymbolState.from_bytes(st.to_bytes()) == st  # and saves as the new version


def test_a_state_saved_before_hidden_lags_restores_without_them() -> None:
    """Version 3 (the first issue-16 build): no lag learners, statistics of 16 fields."""
    import orjson

    from agents.arbitration.core.lags import LagLearner
    from agents.arbitration.core.state import SymbolState

    new = SymbolState("BTC/USD", "crypto", 0, lags={"a": LagLearner(samples=3)})
    saved = orjson.loads(new.to_bytes())[:13]
    saved[0] = 3
    saved[6] = {
        "a": [9.0, 50, 9.0, 0.0, 8.0, 50, 100.0, 1_000, False, 250.0, 0.0, 1_000, 51, 0, 900, "up"]
    }
    st = SymbolState.from_bytes(orjson.dumps(saved))
    assert st.lags == {} and st.stats["a"].info_lag_ms == 0 and st.stats["a"].total_var == 9.0
    assert SymbolState.from_bytes(st.to_bytes()) == st


def test_a_version_2_positional_mark_restores_to_the_same_state() -> None:
    """Marks written before the typed checkpoint (a positional list) are still read: a worker
    upgraded in place resumes where the old one stopped."""
    proc = Processor(ArbitrationSettings())
    for offset, value in enumerate(LOG[:30]):
        proc.process(None, value, 0, offset)
    mark = orjson.loads(proc.mark(0))
    positional = orjson.dumps([2, mark["applied"], mark["watermark"], mark["states"]])
    restored = Processor(ArbitrationSettings())
    restored.restore(0, positional)
    assert restored.resume_offset(0) == 30
    assert restored.mark(0) == proc.mark(0)


def _raw(provider: str, t: int, price: float, trade_id: str | None = None) -> bytes:
    common = dict(provider=provider, symbol="S/USD", provider_symbol="SUSD", asset_type="crypto")
    times = dict(event_time_ms=t, ingest_time_ms=t, seq=1)
    if trade_id is None:
        return encode(RawTick(**common, price=price, **times))  # type: ignore[arg-type]
    return encode(RawTrade(**common, price=price, amount=5.0, trade_id=trade_id, **times))  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["python", "compiled"])
def test_a_record_that_fails_part_way_is_in_the_next_mark(name: str) -> None:
    """A trade whose TradeUpdate is refused (its id, once the provider is prefixed, is over 64
    characters) raises after it changed the state (its candle's volume, its quote): it is
    dead-lettered, and the mark after it must hold the state as it is, or a restart from that
    mark would not be where the uninterrupted run is (found in review: the candle lost the
    trade's volume and high)."""
    t = 1_764_892_800_000
    settings = ArbitrationSettings(engine=name)
    run = make_processor(settings)
    run.process(None, _raw("a", t, 1.0), 0, 0)
    run.process(None, _raw("b", t + 1, 1.0), 0, 1)
    run.mark(0)
    run.process(None, _raw("a", t + 5, 2.0, trade_id="x" * 64), 0, 2)
    assert run.poison == 1
    mark = run.mark(0)
    run.drain_partitions()
    restarted = make_processor(settings)
    restarted.restore(0, mark)
    later = [_raw("b", t + 1000 * k, 1.0) for k in range(2, 8)]
    for engine in (run, restarted):
        engine.process_many(0, [(None, v, 3 + i) for i, v in enumerate(later)])
    assert restarted.drain_partitions() == run.drain_partitions()
    assert restarted.mark(0) == run.mark(0)
