"""``gateway.history.time_ordered``: the records of one fetch (a run per partition, each in
offset order) in Kafka-timestamp order, without ever reordering a partition's records (a resume
position counts on it), whether each run's timestamps rise or not."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given
from hypothesis import strategies as st

from gateway.history import time_ordered


@dataclass(frozen=True)
class Rec:
    """What ``time_ordered`` reads of an aiokafka ConsumerRecord."""

    partition: int
    offset: int
    timestamp: int


stamps = st.integers(min_value=0, max_value=50)


@st.composite
def runs(draw: st.DrawFn, rising: bool | None = None) -> list[list[Rec]]:
    """One run per partition, offsets rising from a random start; timestamps sorted when
    ``rising`` (else random, sometimes sorted anyway); some runs empty."""
    out: list[list[Rec]] = []
    for partition in range(draw(st.integers(min_value=0, max_value=6))):
        times = draw(st.lists(stamps, max_size=30))
        if rising or (rising is None and draw(st.booleans())):
            times.sort()
        first = draw(st.integers(min_value=0, max_value=10**6))
        out.append([Rec(partition, first + i, t) for i, t in enumerate(times)])
    return out


def check_run_order_kept(inp: list[list[Rec]], out: list[Rec]) -> None:
    for run in inp:
        if run:
            assert [m for m in out if m.partition == run[0].partition] == run


@given(runs())
def test_the_output_is_a_permutation_keeping_every_run_in_order(inp: list[list[Rec]]) -> None:
    flat = [m for run in inp for m in run]
    out = time_ordered([list(run) for run in inp])
    assert sorted(out, key=lambda m: (m.partition, m.offset)) == sorted(
        flat, key=lambda m: (m.partition, m.offset)
    )
    assert len(out) == len(flat)
    check_run_order_kept(inp, out)


@given(runs(rising=True))
def test_rising_runs_come_out_in_timestamp_order(inp: list[list[Rec]]) -> None:
    out = time_ordered([list(run) for run in inp])
    assert [m.timestamp for m in out] == sorted(m.timestamp for run in inp for m in run)
    check_run_order_kept(inp, out)


@given(runs(rising=False))
def test_runs_that_go_back_keep_their_order(inp: list[list[Rec]]) -> None:
    out = time_ordered([list(run) for run in inp])
    assert len(out) == sum(map(len, inp))
    check_run_order_kept(inp, out)


def test_no_runs_or_only_empty_ones_give_nothing() -> None:
    assert time_ordered([]) == []
    assert time_ordered([[], [], []]) == []


@given(st.lists(stamps, max_size=30), st.integers(0, 5))
def test_a_single_run_comes_back_as_it_was(times: list[int], empties: int) -> None:
    run = [Rec(3, i, t) for i, t in enumerate(times)]
    assert time_ordered([list(run)]) == run
    assert time_ordered([[]] * empties + [list(run)] + [[]] * empties) == run


def test_a_run_going_back_is_merged_not_sorted() -> None:
    a = [Rec(0, 0, 5), Rec(0, 1, 1), Rec(0, 2, 6)]  # a producer's clock went back
    b = [Rec(1, 0, 2), Rec(1, 1, 3)]
    out = time_ordered([a, b])
    assert out == [Rec(1, 0, 2), Rec(1, 1, 3), Rec(0, 0, 5), Rec(0, 1, 1), Rec(0, 2, 6)]
