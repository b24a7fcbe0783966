"""Conflation, batching, real-time overflow and sequence history, without a network."""

from __future__ import annotations

import pytest

from gateway.channels import StreamSpec
from gateway.errors import SlowClientError
from gateway.subscription import Subscription
from schemas.protocol import StreamType

PRICE = StreamSpec(StreamType.PRICE, "fiml.prices", ("A", "B"), "")
TRADES = StreamSpec(StreamType.TRADES, "fiml.trades", ("A",), "")
A, B = ("fiml.prices", "A", ""), ("fiml.prices", "B", "")


def sub(spec: StreamSpec = PRICE, mode: str = "conflated", **kw: object) -> Subscription:
    return Subscription("s", spec, mode, 1.0, **kw)  # type: ignore[arg-type]


def test_conflated_keeps_latest_per_symbol_and_waits_for_the_interval() -> None:
    s = sub()
    assert s.offer(A, b"1", now=10.0) is True  # first update: wake the writer
    due = s.due()
    assert due is not None and (due == float("-inf") or due <= 10.0)
    assert s.offer(A, b"2", now=10.1) is False
    s.offer(B, b"3", now=10.2)
    assert s.take(now=10.2) == [b"2", b"3"]
    s.offer(A, b"4", now=10.3)
    assert s.due() == pytest.approx(11.2)  # one message per interval


def test_nothing_is_due_before_the_first_interval_after_the_ack() -> None:
    """The seed's order: a client that sends its next request right after an ack reads that
    request's ack, not data. Conflated and batched streams wait one interval; real-time not."""
    for spec, mode, first_due in (
        (PRICE, "conflated", 11.0),
        (TRADES, "conflated", 11.0),
        (PRICE, "realtime", 10.2),
    ):
        s = sub(spec, mode)
        s.begin(now=10.0)  # the ack went out at 10.0
        channel = ("fiml.trades", "A", "") if spec is TRADES else A
        assert s.offer(channel, b"snapshot", now=10.2) is True
        assert s.due() == pytest.approx(first_due), (spec.topic, mode)


def test_realtime_forwards_everything_then_conflates_past_the_bound() -> None:
    s = sub(mode="realtime", max_pending=3)
    for i in range(3):
        s.offer(A, str(i).encode(), now=0.0)
    assert s.due() == 0.0
    s.offer(B, b"x", now=0.0)  # over the bound: conflate, latest value per symbol
    assert s.take(0.0) == [b"2", b"x"] and s.dropped == 2


def test_trades_are_batched_flushed_early_and_finally_refused() -> None:
    s = sub(TRADES, max_pending=2)
    s.offer(("fiml.trades", "A", ""), b"t1", now=5.0)
    assert s.offer(("fiml.trades", "A", ""), b"t2", now=5.0) is True
    assert s.due() == 5.0
    s.offer(("fiml.trades", "A", ""), b"t3", now=5.0)
    with pytest.raises(SlowClientError):
        s.offer(("fiml.trades", "A", ""), b"t4", now=5.0)


def test_held_subscription_is_never_due() -> None:
    s = sub()
    s.held = True
    s.offer(A, b"1", now=0.0)
    assert s.due() is None


def test_each_message_gets_the_next_seq_and_a_token_of_where_the_topic_stood() -> None:
    made: list[tuple[int, tuple[int, ...]]] = []

    def sign(seq: int, positions: tuple[int, ...]) -> str:
        made.append((seq, positions))
        return f"token-{seq}"

    s = sub()
    assert s.token((0, 0)) is None  # nobody signs for it yet
    s.sign = sign
    assert s.token((0, 0)) == "token-0"  # the ack's: before the first message
    for i in range(1, 4):
        assert s.next_seq() == i and s.token((i, i)) == f"token-{i}"
    assert made == [(0, (0, 0)), (1, (1, 1)), (2, (2, 2)), (3, (3, 3))]
    s.live = False  # a bounded replay cannot be resumed
    assert s.next_seq() == 4 and s.token((4, 4)) is None


@pytest.mark.parametrize(
    ("spec", "mode"),
    [
        (PRICE, "conflated"),
        (PRICE, "realtime"),
        (TRADES, "conflated"),
    ],
)
def test_offer_many_is_offer_each(spec: StreamSpec, mode: str) -> None:
    channel = spec.channels[0]
    one, many = sub(spec, mode, max_pending=4), sub(spec, mode, max_pending=4)
    for batch in ([b"1"], [b"2", b"3"], [b"4", b"5", b"6"]):
        woke = [one.offer(channel, p, now=1.0) for p in batch]
        assert many.offer_many(channel, batch, now=1.0) is any(woke)
        assert (many.pending, many.dropped, many.due()) == (one.pending, one.dropped, one.due())
    assert many.take(2.0) == one.take(2.0)
    with pytest.raises(SlowClientError):
        sub(TRADES, max_pending=2).offer_many(TRADES.channels[0], [b"1"] * 4, now=1.0)


def test_realtime_overflow_keeps_the_latest_value_of_every_symbol() -> None:
    # Issue 6, "conflated, then disconnected": past the bound a real-time subscription falls
    # back to latest-value-per-symbol conflation; no symbol loses its latest value.
    s = sub(mode="realtime", max_pending=3)
    s.offer(A, b"a1", now=0.0)
    s.offer(B, b"b1", now=0.0)
    s.offer(A, b"a2", now=0.0)
    assert s.conflations == 0
    s.offer(A, b"a3", now=0.0)  # over the bound
    assert s.pending == 2 and s.conflations == 1
    assert s.take(0.0) == [b"a3", b"b1"] and s.dropped == 2  # a1 and a2 superseded


def test_realtime_overflow_in_one_batch_keeps_every_symbol() -> None:
    s = sub(mode="realtime", max_pending=3)
    s.offer_many(B, [b"b1"], now=0.0)
    s.offer_many(A, [b"a1", b"a2", b"a3"], now=0.0)
    assert s.take(0.0) == [b"b1", b"a3"] and (s.dropped, s.conflations) == (2, 1)
    s.offer_many(A, [b"a4", b"a5"], now=1.0)  # flushed: real-time again, nothing dropped
    assert s.take(1.0) == [b"a4", b"a5"] and s.dropped == 2


def test_trades_overflow_is_never_conflated() -> None:
    s = sub(TRADES, mode="realtime", max_pending=2)
    s.offer_many(TRADES.channels[0], [b"t1", b"t2", b"t3"], now=0.0)
    assert s.take(0.0) == [b"t1", b"t2", b"t3"] and (s.dropped, s.conflations) == (0, 0)
    with pytest.raises(SlowClientError):
        s.offer_many(TRADES.channels[0], [b"t"] * 4, now=0.0)
