"""The merge rule: outputs do not depend on how ticks and trades interleave on arrival."""

from __future__ import annotations

import random

from agents.arbitration.merge import TICKS, TRADES, MergeQueues
from agents.arbitration.processor import Processor
from agents.arbitration.settings import ArbitrationSettings
from schemas.codec import encode
from schemas.records import AssetType, RawTick, RawTrade

START = 1_700_000_000_000


def records() -> list[tuple[str, int, bytes]]:
    rng = random.Random(3)
    ticks, trades = [], []
    for i in range(400):
        t = START + i * 250 + rng.randrange(200)
        px = 100 + rng.gauss(0, 0.1)
        ticks.append(encode(RawTick(provider=f"p{i % 3}", symbol="BTC/USD",
                                    provider_symbol="BTCUSD", asset_type=AssetType.CRYPTO,
                                    price=px, event_time_ms=t, ingest_time_ms=t, seq=i)))
        if i % 2:
            trades.append(encode(RawTrade(
                provider="p1", symbol="BTC/USD", provider_symbol="BTCUSD",
                asset_type=AssetType.CRYPTO, trade_id=str(i), price=px, amount=1.5,
                side="buy", event_time_ms=t - rng.randrange(300), ingest_time_ms=t, seq=i)))
    return ([(TICKS, o, v) for o, v in enumerate(ticks)]
            + [(TRADES, o, v) for o, v in enumerate(trades)])


def run(order: list[tuple[str, int, bytes]], chunk: int, hold: set[str]) -> list[bytes]:
    """Admit in ``order``, releasing every ``chunk`` records; the kinds in ``hold`` are not
    caught up until the end."""
    proc = Processor(ArbitrationSettings())
    for i, (kind, offset, value) in enumerate(order):
        proc.admit(kind, None, value, 0, offset)
        if i % chunk == 0:
            proc.release(0, lambda k: k not in hold)
    proc.release(0, lambda k: True)
    return [v for _t, _k, v, _p, _h in proc.drain()]


def test_any_interleaving_gives_the_same_outputs() -> None:
    recs = records()
    ticks = [r for r in recs if r[0] == TICKS]
    trades = [r for r in recs if r[0] == TRADES]
    reference = run(ticks + trades, 10**9, set())
    assert any(b"fiml" not in v for v in reference)  # something came out
    rng = random.Random(11)
    for _ in range(5):
        # a random interleaving that keeps each topic's own order, released in random chunks
        # while neither topic is caught up (the escape is only taken once everything is in)
        order, a, b = [], list(ticks), list(trades)
        while a or b:
            src = a if (a and (not b or rng.random() < 0.5)) else b
            order.append(src.pop(0))
        assert run(order, rng.choice((1, 7, 100)), {TRADES, TICKS}) == reference


def test_held_records_wait_for_the_other_topic() -> None:
    q = MergeQueues()
    assert q.admit(TICKS, 10, 0, b"a")
    assert not q.admit(TICKS, 10, 0, b"a")  # a replay
    assert list(q.release(lambda k: False)) == []
    q.admit(TRADES, 5, 0, b"b")
    assert [v for _k, _o, v, _r in q.release(lambda k: False)] == [b"b"]  # a waits
    q.admit(TRADES, 20, 1, b"c")
    assert [v for _k, _o, v, _r in q.release(lambda k: False)] == [b"a"]  # c waits
    assert [v for _k, _o, v, _r in q.release(lambda k: k == TICKS)] == [b"c"]
    restored = MergeQueues.from_list(q.to_list())
    assert restored.admitted == {TICKS: 0, TRADES: 1}


def test_take_is_admit_then_release_of_an_empty_queue() -> None:
    taken, queued = MergeQueues(), MergeQueues()
    for kind, offset in [(TICKS, 0), (TICKS, 0), (TRADES, 3), (TICKS, 1), (TRADES, 2)]:
        admitted = queued.admit(kind, 0, offset, b"x")
        assert taken.take(kind, offset) == admitted
        assert len(list(queued.release(lambda k: True))) == admitted
        assert taken.to_list() == queued.to_list()


def test_process_gives_what_admit_and_release_give() -> None:
    """``process`` skips the queues when nothing is held: same outputs, states and counters,
    with replayed offsets, a poison record and a held record mixed in."""
    recs = sorted(records(), key=lambda r: (r[1], r[0]))
    recs = recs[:300] + recs[250:]  # a replay of 50 records
    recs.insert(100, (TICKS, 10**6, b"not json"))

    def feed(proc: Processor, direct: bool) -> tuple[object, ...]:
        for i, (kind, offset, value) in enumerate(recs):
            if i == 40:  # held: the next process() releases it first
                proc.admit(kind, None, value, 0, offset)
            elif direct:
                proc.process(kind, None, value, 0, offset)
            else:
                proc.admit(kind, None, value, 0, offset)
                proc.release(0, lambda k: True)
        return (proc.drain(), proc.mark(0, None), proc.poison, proc.skipped, proc.late_ticks())

    def new() -> Processor:
        return Processor(ArbitrationSettings())

    assert feed(new(), True) == feed(new(), False)
