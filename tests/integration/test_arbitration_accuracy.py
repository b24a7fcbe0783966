"""Accuracy against the simulator's truth: ingestion's simulator -> Kafka -> the worker."""

from __future__ import annotations

import bisect
import statistics
import uuid
from pathlib import Path
from typing import Any

import pytest

from agents.arbitration.core.processor import RAW
from agents.arbitration.rebuild import end_offsets, wait_caught_up
from agents.ingest import run_simulation
from infra.topics import create_topics
from tests.integration.arbitration_support import WorkerProcess, read_all

pytestmark = pytest.mark.integration

SYMBOLS = ("BTC/USDT", "ETH/USDT", "AAPL", "MSFT")


def as_of(times: list[int], values: list[float], t: int) -> float | None:
    i = bisect.bisect_right(times, t) - 1
    return values[i] if i >= 0 else None


async def test_consensus_beats_the_best_single_provider(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    """At every event time at which a price was published, the consensus is compared with the
    truth at that time, and so is each provider's latest quote as of that time (what a user of
    that provider alone would have had). Mean absolute error in basis points."""
    await create_topics(kafka_bootstrap)
    app_id = f"arb-{uuid.uuid4().hex[:8]}"
    worker = WorkerProcess(kafka_bootstrap, app_id, tmp_path / "faust", tmp_path / "w.log")
    worker.start()  # before the data, as in production
    try:
        await run_simulation(kafka_bootstrap, 12_000, seed=5, symbols=SYMBOLS, speed=0.0)
        ends = await end_offsets(kafka_bootstrap, topic_prefix, (RAW,))
        await wait_caught_up(kafka_bootstrap, app_id, ends, 240, worker.alive)
    finally:
        out = worker.stop()
    assert "Traceback" not in out, out[-3000:]
    prices = await read_all(kafka_bootstrap, "fiml.prices")
    truth = await read_all(kafka_bootstrap, "fiml.sim.truth")
    raw = await read_all(kafka_bootstrap, "fiml.raw")
    assert prices and truth and raw

    def series(
        records: list[dict[str, Any]],
    ) -> dict[tuple[str, str], tuple[list[int], list[float]]]:
        out: dict[tuple[str, str], list[tuple[int, float]]] = {}
        for r in records:
            out.setdefault((r["symbol"], r["provider"]), []).append(
                (r["event_time_ms"], r["price"])
            )
        return {k: ([t for t, _ in sorted(v)], [p for _, p in sorted(v)]) for k, v in out.items()}

    truths = series(truth)
    quotes = series(raw)
    providers = sorted({p for _s, p in quotes})
    errors: dict[str, list[float]] = {p: [] for p in ["consensus", *providers]}
    for price in prices:
        s, t = price["symbol"], price["event_time_ms"]
        true = as_of(*truths[(s, "truth")], t)
        if true is None:
            continue
        errors["consensus"].append(abs(price["price"] - true) / true * 1e4)
        for p in providers:
            if (s, p) in quotes and (q := as_of(*quotes[(s, p)], t)) is not None:
                errors[p].append(abs(q - true) / true * 1e4)
    mean = {k: statistics.mean(v) for k, v in errors.items() if v}
    print(
        "mean abs error vs truth (bps):",
        {k: round(v, 3) for k, v in mean.items()},
        "prices:",
        len(errors["consensus"]),
    )
    best = min(v for k, v in mean.items() if k != "consensus")
    assert mean["consensus"] < best
