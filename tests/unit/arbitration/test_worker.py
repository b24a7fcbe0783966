"""``ArbitrationWorker`` over the in-memory fakes of its ports: the guarantees without a broker.

* Offsets never ahead of outputs: every commit, under injected publish failures at every step
  (an output sent, a stage of a commit) and a clean stop or none after each, holds exactly the
  outputs of the records its offset and checkpoint cover.
* Exactly once: a worker restarted from the fakes' committed state after a crash at any step,
  with what was committed before, gives exactly the outputs of an uninterrupted run.
* Fencing: a fenced producer (at any step) stops the worker from publishing anything more for
  that partition, and the partition's state and unsent outputs are dropped, until the group
  assigns it again.
* A revocation mid-batch waits for the batch, commits it and drops the partition; records
  fetched before a revocation are dropped unapplied.
* A checkpoint that cannot be read stops the worker with the sentence an operator needs.

The engine is the real, pure ``Processor``; the uninterrupted run is the same processor fed
each partition's records once.
"""

from __future__ import annotations

import contextlib
import importlib.util
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents.arbitration.core.checkpoint import Checkpoint
from agents.arbitration.core.processor import Output, Processor
from agents.arbitration.engine import make_processor
from agents.arbitration.settings import ArbitrationSettings
from agents.arbitration.synthetic import ProviderModel, synthetic_ticks, trade_of
from agents.arbitration.worker.errors import FencedError, UnreadableCheckpointError
from agents.arbitration.worker.fakes import (
    FakeBroker,
    FakeCheckpointStore,
    FakePublisher,
    FakeSource,
    PublishFailed,
)
from agents.arbitration.worker.worker import ArbitrationWorker
from schemas.codec import encode
from schemas.records import RawTick, RawTrade

START = 1_764_892_800_000  # 2025-12-05T00:00:00Z
PARTITIONS = {"BTC/USD": 0, "ETH/USD": 1}


def raw_log() -> dict[int, list[tuple[bytes | None, bytes]]]:
    """Twenty seconds of two symbols from three providers, one symbol a partition, a trade
    every fourth tick and a poison record now and then."""
    models = [
        ProviderModel("alpha", noise_bps=2, every_ms=700),
        ProviderModel("bravo", noise_bps=4, every_ms=1100),
        ProviderModel("charlie", noise_bps=8, every_ms=1700),
    ]
    ticks, _ = synthetic_ticks(list(PARTITIONS), models, START, 20_000)
    log: dict[int, list[tuple[bytes | None, bytes]]] = {p: [] for p in PARTITIONS.values()}
    for i, t in enumerate(ticks):
        records: list[RawTick | RawTrade] = [t]
        if i % 4 == 1:
            records.append(trade_of(t, f"t{i}", 0.5 + i % 3, seq=i))
        for r in records:
            log[PARTITIONS[r.symbol]].append((r.symbol.encode(), encode(r)))
        if i % 37 == 5:
            log[PARTITIONS[t.symbol]].append((t.symbol.encode(), b"{not json"))
    return log


RAW = raw_log()
ENGINES = [
    "python",
    pytest.param(
        "compiled",
        marks=pytest.mark.skipif(
            importlib.util.find_spec("fiml_arbcore") is None,
            reason="the compiled core is built by `make setup`",
        ),
    ),
]


@dataclass(frozen=True)
class Reference:
    """The uninterrupted run: each partition's outputs, and how many the first n records
    make (``made[p][n]``)."""

    outputs: dict[int, list[Output]]
    made: dict[int, list[int]]


def uninterrupted() -> Reference:
    outputs: dict[int, list[Output]] = {}
    made: dict[int, list[int]] = {}
    for p, records in RAW.items():
        engine = Processor(ArbitrationSettings())
        outs = outputs[p] = []
        counts = made[p] = [0]
        for offset, (key, value) in enumerate(records):
            engine.process(key, value, p, offset)
            outs.extend(engine.drain_partitions().get(p, []))
            counts.append(len(outs))
    return Reference(outputs, made)


REFERENCE = uninterrupted()


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Member:
    """One worker process over the shared fake broker."""

    worker: ArbitrationWorker
    source: FakeSource
    publisher: FakePublisher
    clock: Clock


def member(broker: FakeBroker, commit_ms: int = 0, engine: str = "python") -> Member:
    settings = ArbitrationSettings(commit_ms=commit_ms, engine=engine)
    source, publisher, clock = FakeSource(broker), FakePublisher(broker), Clock()
    worker = ArbitrationWorker(
        make_processor(settings), source, publisher, FakeCheckpointStore(broker), settings, clock
    )
    source.feed(worker)
    return Member(worker, source, publisher, clock)


def fresh_broker() -> FakeBroker:
    return FakeBroker(raw={p: list(records) for p, records in RAW.items()})


async def run_to_the_end(
    broker: FakeBroker, sizes: list[int], commit_ms: int, clean_stop: bool, engine: str = "python"
) -> int:
    """Run workers over ``broker`` until every raw record is committed: a worker whose publish
    fails is stopped as Faust stops it (``stop``, when ``clean_stop``) or vanishes (SIGKILL),
    and a new one starts from the committed state. How many restarts it took."""
    restarts = 0
    fetches = 0
    while True:
        m = member(broker, commit_ms, engine)
        try:
            await m.source.assign(set(RAW))
            while m.source.pending():
                await m.source.fetch(sizes[fetches % len(sizes)])
                fetches += 1
                m.clock.now += 0.05
            await m.worker.stop()
            return restarts
        except PublishFailed:
            if clean_stop:
                with contextlib.suppress(PublishFailed):
                    await m.worker.stop()
            restarts += 1
            assert restarts <= len(broker.fail_at) + 1


def committed_in_order(broker: FakeBroker) -> None:
    """Every commit holds exactly the outputs of the records its offset covers, and its
    checkpoint (the last one committed) ends where its offset does."""
    outputs: dict[int, list[Output]] = {}
    checkpoint: dict[int, bytes] = {}
    for c in broker.commits:
        outputs.setdefault(c.partition, []).extend(c.outputs)
        if c.checkpoint is not None:
            checkpoint[c.partition] = c.checkpoint
        assert c.next_offset is not None  # a commit covers at least one record
        covered = REFERENCE.made[c.partition][c.next_offset]
        assert outputs[c.partition] == REFERENCE.outputs[c.partition][:covered]
        saved = Checkpoint.from_bytes(checkpoint[c.partition])
        assert saved.applied + 1 == c.next_offset


RUNS = st.tuples(
    st.lists(st.integers(1, 40), min_size=1, max_size=4),  # records per partition per fetch
    st.sampled_from([0, 100, 300]),  # commit_ms; the clock moves 50 ms a fetch
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(run=RUNS, data=st.data(), clean_stop=st.booleans())
async def test_offsets_are_never_ahead_of_outputs(
    run: tuple[list[int], int], data: st.DataObject, clean_stop: bool
) -> None:
    sizes, commit_ms = run
    broker = fresh_broker()
    steps = await _steps(sizes, commit_ms)
    broker.fail_at = set(data.draw(st.lists(st.integers(0, steps - 1), max_size=3)))
    await run_to_the_end(broker, sizes, commit_ms, clean_stop)
    committed_in_order(broker)


@pytest.mark.parametrize("engine", ENGINES)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(run=RUNS, data=st.data(), clean_stop=st.booleans())
async def test_a_restart_after_a_crash_at_any_point_gives_each_output_once(
    engine: str, run: tuple[list[int], int], data: st.DataObject, clean_stop: bool
) -> None:
    """With the Python reference and with the compiled core: the outputs are the
    reference's either way."""
    sizes, commit_ms = run
    broker = fresh_broker()
    steps = await _steps(sizes, commit_ms)
    broker.fail_at = {data.draw(st.integers(0, steps - 1))}
    restarts = await run_to_the_end(broker, sizes, commit_ms, clean_stop, engine)
    assert restarts == 1
    assert broker.outputs == REFERENCE.outputs
    assert broker.offsets == {p: len(records) for p, records in RAW.items()}


async def _steps(sizes: list[int], commit_ms: int) -> int:
    broker = fresh_broker()
    await run_to_the_end(broker, sizes, commit_ms, clean_stop=True)
    assert broker.outputs == REFERENCE.outputs  # the uninterrupted worker, for a start
    return broker.steps


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(run=RUNS, data=st.data(), partition=st.sampled_from(sorted(RAW)))
async def test_a_fenced_partition_is_written_no_more_until_it_is_assigned_again(
    run: tuple[list[int], int], data: st.DataObject, partition: int
) -> None:
    sizes, commit_ms = run
    broker = fresh_broker()
    broker.fence_at = {data.draw(st.integers(0, await _steps(sizes, commit_ms) - 1)): partition}
    m = member(broker, commit_ms)
    await m.source.assign(set(RAW))
    fetches = 0
    fenced_at: int | None = None  # commits so far when the worker let the partition go
    while m.source.pending():
        await m.source.fetch(sizes[fetches % len(sizes)])
        fetches += 1
        m.clock.now += 0.05
        if fenced_at is None and not m.worker.owns(partition):
            fenced_at = len(broker.commits)
            assert partition in m.publisher.released
            assert m.worker.engine.resume_offset(partition) is None  # its state is dropped
            assert partition not in m.worker.engine.drain_partitions()  # its unsent outputs
    await m.worker.stop()  # (the fence may be noticed only here, by the stop's commit)
    if fenced_at is not None:
        assert all(c.partition != partition for c in broker.commits[fenced_at:])
    # the group's next assignment gives it back: taken over again, nothing twice
    await m.source.assign({partition})
    while m.source.pending():
        await m.source.fetch(sizes[0])
    await m.worker.stop()
    assert broker.outputs == REFERENCE.outputs


async def test_a_fenced_publisher_raises_a_typed_error() -> None:
    broker = fresh_broker()
    publisher = FakePublisher(broker)
    await publisher.take_over(0)
    broker.fence(0)
    with pytest.raises(FencedError) as raised:
        await publisher.send(0, [])
    assert raised.value.partition == 0
    with pytest.raises(FencedError):
        await publisher.commit(0, None, 1)


async def test_a_revocation_mid_batch_commits_the_batch_then_drops_the_partition() -> None:
    broker = fresh_broker()
    m = member(broker, commit_ms=60_000)  # no commit but the first and the revocation's
    await m.source.assign(set(RAW))
    await m.source.fetch(10)
    batch = await m.source.fetch(10, revoke_mid_batch={0})
    taken = max(r.offset for r in batch if r.partition == 0) + 1
    assert broker.offsets[0] == taken  # the revocation waited for the batch, then committed it
    assert broker.outputs[0] == REFERENCE.outputs[0][: REFERENCE.made[0][taken]]
    assert not m.worker.owns(0) and m.worker.engine.resume_offset(0) is None
    assert 0 not in m.worker.engine.drain_partitions()
    assert m.source.assignment() == {1}


async def test_records_fetched_before_a_revocation_are_not_applied() -> None:
    broker = fresh_broker()
    m = member(broker)
    await m.source.assign(set(RAW))
    await m.source.fetch(10)
    commits = len(broker.commits)
    await m.source.fetch(10, revoke_after_fetch={0})
    assert broker.offsets[0] == 10  # the second fetch's records of 0 are another owner's
    assert all(c.partition != 0 for c in broker.commits[commits + 1 :])
    assert m.worker.engine.resume_offset(0) is None
    # the next owner (here this worker again) takes them, once
    await m.source.assign({0})
    while m.source.pending():
        await m.source.fetch(25)
    await m.worker.stop()
    assert broker.outputs == REFERENCE.outputs


async def test_a_fetch_past_the_state_goes_back_to_where_it_ends() -> None:
    """A fetch that a rebalance interrupted was dropped, the position already past it."""
    broker = fresh_broker()
    m = member(broker)
    await m.source.assign(set(RAW))
    await m.source.fetch(10)
    m.source.skip(0, 5)
    await m.source.fetch(10)
    assert m.source.rewinds == [(0, 10)]
    while m.source.pending():
        await m.source.fetch(25)
    await m.worker.stop()
    assert broker.outputs == REFERENCE.outputs


async def test_a_checkpoint_this_version_cannot_read_stops_the_worker_with_the_fix() -> None:
    broker = fresh_broker()
    broker.checkpoints[1] = b"[99, 0, 0, []]"
    m = member(broker)
    with pytest.raises(UnreadableCheckpointError) as raised:
        await m.source.assign(set(RAW))
    assert str(raised.value) == (
        "the saved state of raw partition 1 (fake-marks) cannot be read by this version "
        "(ValueError: a checkpoint of version 99, expected 3); start from empty state with "
        "`fiml up --fresh`, or delete the marks topic and rebuild with `fiml rebuild`"
    )
    assert isinstance(raised.value, ValueError)
    assert not m.worker.owns(1) and 1 in m.publisher.released  # its producer is closed


async def test_a_checkpoint_out_of_reach_stops_the_worker() -> None:
    broker = fresh_broker()
    broker.unreachable = {0}
    m = member(broker)
    with pytest.raises(TimeoutError):
        await m.source.assign({0})
    assert not m.worker.owns(0) and m.publisher.released == [0]


async def test_a_quiet_partition_is_committed_by_the_timer() -> None:
    broker = fresh_broker()
    m = member(broker, commit_ms=100)
    await m.source.assign(set(RAW))
    await m.source.fetch(5)  # a partition's first batch commits at once
    await m.source.fetch(5)  # within commit_ms: stays open
    assert broker.offsets == {0: 5, 1: 5}
    await m.worker.commit_quiet()
    assert broker.offsets == {0: 5, 1: 5}
    m.clock.now += 0.1
    await m.worker.commit_quiet()
    assert broker.offsets == {0: 10, 1: 10}
    assert m.worker.checkpoint_age_s() == {0: 0.0, 1: 0.0}
    assert m.worker.lag() == {p: len(RAW[p]) - 10 for p in RAW}
