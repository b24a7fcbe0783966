"""``fiml rebuild`` reproduces the derived topics record for record."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from agents.arbitration.core.processor import RAW
from agents.arbitration.rebuild import DERIVED, end_offsets, rebuild, wait_caught_up
from agents.arbitration.synthetic import synthetic_ticks, trade_of
from infra.topics import create_topics
from schemas.topics import TOPICS
from tests.integration.arbitration_support import WorkerProcess, produce, read_all, tick_values
from tests.integration.test_arbitration_worker import PROVIDERS, START, SYMBOLS

pytestmark = pytest.mark.integration


def by_partition(records: list[Any], single: bool) -> dict[int, list[Any]]:
    out: dict[int, list[Any]] = {}
    for key, value, headers, partition in records:
        out.setdefault(partition, []).append((key, value, sorted(headers.items())))
    if single:  # see the test's docstring
        out = {p: sorted(r) for p, r in out.items()}
    return out


async def test_rebuild_reproduces_the_derived_topics(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    """Every derived record, key and header is compared. The one thing that may differ is the
    order *between* source partitions inside the single-partition topics (provider health, dead
    letters): each source partition is processed in order, but how two partitions interleave
    depends on fetch timing, so those two topics are compared as sorted lists per partition."""
    await create_topics(kafka_bootstrap)
    ticks, _ = synthetic_ticks(SYMBOLS, PROVIDERS, START, 120_000)
    await produce(kafka_bootstrap, RAW, [(b"ETH/USD", b"{not json")])
    await produce(kafka_bootstrap, RAW, tick_values(ticks))
    await produce(kafka_bootstrap, RAW, [(b"SOL/USD", b'{"v":1}')])
    # alpha's ticks are also trades (volume, fiml.trades), after the ticks in the log: the
    # partition's order is the processing order, for the live worker and the rebuild alike
    trades = [
        trade_of(t, str(t.seq), 0.5 + t.seq % 7, side="buy") for t in ticks if t.provider == "alpha"
    ]
    await produce(kafka_bootstrap, RAW, tick_values(trades))
    app_id = f"arb-{uuid.uuid4().hex[:8]}"
    worker = WorkerProcess(kafka_bootstrap, app_id, tmp_path / "faust", tmp_path / "w.log")
    worker.start()
    try:
        ends = await end_offsets(kafka_bootstrap, topic_prefix, (RAW,))
        await wait_caught_up(kafka_bootstrap, app_id, ends, 180, worker.alive)
    finally:
        out = worker.stop()
    assert "Traceback" not in out, out[-3000:]

    target = f"r{uuid.uuid4().hex[:8]}."
    report = await rebuild(
        kafka_bootstrap, topic_prefix, target, timeout_s=180, log_path=tmp_path / "rebuild.log"
    )
    assert report.raw[topic_prefix + "fiml.raw"] == len(ticks) + 2 + len(trades)
    for logical in DERIVED:
        n = report.derived[target + TOPICS[logical].name]
        single = TOPICS[logical].partitions == 1
        original = await read_all(kafka_bootstrap, logical, raw=True)
        rebuilt = await read_all(kafka_bootstrap, logical, raw=True, prefix=target)
        assert len(original) == len(rebuilt) == n, logical
        assert by_partition(original, single) == by_partition(rebuilt, single), logical
    assert report.derived[target + "fiml.prices"] == len(ticks) + len(trades)
    assert report.derived[target + "fiml.trades"] == len(trades)
    assert report.derived[target + "fiml.deadletter"] == 2
