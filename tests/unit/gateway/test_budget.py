"""The replay budget (gateway/budget.py): a token bucket of event-loop time shared by every
catch-up. On a fake clock: payers that sleep the waits it returns never take more than
``share`` of the loop over a long run (plus the burst), take all of it when they always have
work, wait nothing within the burst and, beyond it, in proportion to the debt."""

from __future__ import annotations

import asyncio
import contextlib
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.budget import ReplayBudget

EPS = 1e-9


class FakeClock:
    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def simulate(
    share: float, burst: float, slices: list[list[float]]
) -> tuple[FakeClock, float, float, list[float]]:
    """Payers (one list of slice durations each) on one loop: the payer ready first runs its
    next slice (the loop's clock moves by the slice), pays it, and sleeps the wait it gets.
    Checks after every charge that what was paid is within ``share`` of the time since the
    budget began, give or take the burst and the debt now owed; returns the clock, the time
    the budget began, the total paid and every wait returned."""
    clock = FakeClock()
    budget = ReplayBudget(share, burst, clock)
    began = clock.now
    ready = [clock.now] * len(slices)
    todo = [list(s) for s in slices]
    paid = 0.0
    waits: list[float] = []
    while any(todo):
        who = min((p for p in range(len(todo)) if todo[p]), key=lambda p: ready[p])
        clock.now = max(clock.now, ready[who])
        work = todo[who].pop(0)
        clock.now += work  # the slice holds the loop
        wait = budget.charge(work)
        assert wait >= 0
        waits.append(wait)
        paid += work
        elapsed = clock.now - began
        # paid = burst + share * elapsed - tokens (less when the bucket was full and idle);
        # the tokens are -wait * share when in debt
        assert paid <= share * elapsed + burst + share * wait + EPS * (1 + paid)
        ready[who] = clock.now + wait
    return clock, began, paid, waits


def test_a_share_of_a_half_holds_over_a_long_run_of_several_payers() -> None:
    share, burst = 0.5, 0.02
    payers = [[0.001 * (1 + (i * 7 + p) % 13) for i in range(2_000)] for p in range(5)]
    clock, began, paid, waits = simulate(share, burst, payers)
    # once every payer has slept its last wait, the bucket is out of debt: the bound is exact
    end = clock.now + max(waits[-len(payers) :])
    assert paid <= share * (end - began) + burst + EPS
    # and the budget is not stingy: payers that always have work use all of their share
    assert paid >= share * (clock.now - began) - EPS
    assert paid == pytest.approx(sum(map(sum, payers)))


@settings(deadline=None, max_examples=200)
@given(
    share=st.floats(min_value=0.01, max_value=1.0),
    burst=st.floats(min_value=0.0, max_value=0.1),
    slices=st.lists(
        st.lists(st.floats(min_value=0.0, max_value=0.05), min_size=1, max_size=60),
        min_size=1,
        max_size=6,
    ),
)
def test_payers_never_take_more_than_their_share_plus_the_burst(
    share: float, burst: float, slices: list[list[float]]
) -> None:
    clock, began, paid, waits = simulate(share, burst, slices)
    assert paid <= share * (clock.now - began) + burst + share * waits[-1] + EPS * (1 + paid)
    if share * max(map(max, slices)) <= burst:
        # payers always ready, slices within the burst: the loop is never idle with tokens to
        # spare, so the share is all used (but what the bucket held at the start)
        assert paid >= share * (clock.now - began) - burst - EPS * (1 + paid)


@given(
    share=st.floats(min_value=0.01, max_value=1.0),
    burst=st.floats(min_value=0.001, max_value=1.0),
    parts=st.lists(st.floats(min_value=0.0, max_value=1.0), min_size=1, max_size=20),
)
def test_no_wait_while_within_the_burst(share: float, burst: float, parts: list[float]) -> None:
    clock = FakeClock()
    budget = ReplayBudget(share, burst, clock)
    # slices that add up to the burst at most, the clock standing still: nothing to wait
    scale = burst / sum(parts) if sum(parts) > burst else 1.0
    for part in parts:
        assert budget.charge(part * scale * (1 - 1e-9)) == 0.0


@given(
    share=st.floats(min_value=0.01, max_value=1.0),
    burst=st.floats(min_value=0.0, max_value=0.5),
    debt=st.floats(min_value=1e-6, max_value=10.0),
    more=st.floats(min_value=0.0, max_value=10.0),
)
def test_the_wait_is_the_debt_over_the_share(
    share: float, burst: float, debt: float, more: float
) -> None:
    clock = FakeClock()
    budget = ReplayBudget(share, burst, clock)
    wait = budget.charge(burst + debt)
    assert wait == pytest.approx(debt / share, rel=1e-9, abs=1e-12)
    # more while in debt adds to it; time refills it at ``share`` a second
    assert budget.charge(more) == pytest.approx((debt + more) / share, rel=1e-9, abs=1e-12)
    clock.now += (debt + more) / share / 2
    assert budget.charge(0.0) == pytest.approx((debt + more) / share / 2, rel=1e-6, abs=1e-9)
    clock.now += (debt + more) / share
    assert budget.charge(0.0) == 0.0


def test_the_bucket_refills_only_up_to_the_burst() -> None:
    clock = FakeClock()
    budget = ReplayBudget(0.5, 0.02, clock)
    clock.now += 3_600  # an idle hour saves no more than the burst
    assert budget.charge(0.02) == 0.0
    assert budget.charge(0.01) == pytest.approx(0.02)


@pytest.mark.parametrize("share", [0.0, -0.5, 1.0000001, 2.0, math.nan, math.inf, -math.inf])
def test_a_share_outside_zero_to_one_is_refused(share: float) -> None:
    with pytest.raises(ValueError, match="share"):
        ReplayBudget(share)


@given(st.floats(min_value=0.0, max_value=1.0, exclude_min=True))
def test_every_share_in_zero_to_one_is_accepted(share: float) -> None:
    assert ReplayBudget(share).share == share


async def test_turns_are_one_at_a_time_and_go_round_in_order() -> None:
    budget = ReplayBudget(1.0, 1.0, FakeClock())
    inside = 0
    order: list[str] = []

    async def replay(name: str) -> None:
        nonlocal inside
        for _ in range(3):
            async with budget.turn():
                inside += 1
                assert inside == 1, "two turns at once"
                order.append(name)
                await asyncio.sleep(0)  # a turn may await (a fetch): still its own
                inside -= 1

    await asyncio.gather(replay("a"), replay("b"), replay("c"))
    assert order == ["a", "b", "c"] * 3


async def test_what_became_ready_during_a_turn_runs_before_the_next_turn() -> None:
    """A live message that arrives during a replay's turn waits for that turn only, not for
    the turns of every other replay."""
    budget = ReplayBudget(1.0, 1.0, FakeClock())
    loop = asyncio.get_running_loop()
    events: list[str] = []

    async def replay(name: str) -> None:
        for _ in range(2):
            async with budget.turn():
                events.append(name)
                if name == "a":
                    loop.call_soon(events.append, "live")  # ready during a's turn

    await asyncio.gather(replay("a"), replay("b"))
    first_live = events.index("live")
    assert events[first_live - 1] == "a" and "b" not in events[: first_live - 1]


async def test_a_turn_in_debt_holds_the_others_until_it_is_paid() -> None:
    clock = FakeClock()
    budget = ReplayBudget(0.5, 0.0, clock)
    entered: list[float] = []

    async def replay() -> None:
        async with budget.turn():
            entered.append(clock())
            clock.now += 0.01  # this turn "took" 10 ms: 20 ms of debt at a half share

    started = clock()
    await asyncio.gather(replay(), replay())
    # one after the other (the fake clock does not move while the debt is slept off)
    assert entered == [started, started + 0.01]
    assert budget.charge(0.0) > 0  # and the second turn's debt is still owed


async def test_a_turn_cancelled_in_debt_hands_over_at_once() -> None:
    """A client that leaves mid-turn ends its catch-up: the turn is paid but not waited for,
    so the other replays are not held for its debt (here 2,000 s of it)."""
    clock = FakeClock()
    budget = ReplayBudget(0.5, 0.0, clock)
    inside = asyncio.Event()

    async def leaving() -> None:
        async with budget.turn():
            clock.now += 1_000.0
            inside.set()
            await asyncio.Event().wait()  # cancelled here

    task = asyncio.create_task(leaving())
    await inside.wait()
    task.cancel()
    async with asyncio.timeout(5):  # a deadline: it would sleep 2,000 s if it waited the debt
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert budget.charge(0.0) > 0  # the debt is still owed by the budget, not by the lock
