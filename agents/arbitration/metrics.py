"""The arbitration worker's Prometheus metrics: what it read, wrote, refused and owes.

The worker counts records in and out per batch (``WorkerCounters``); the rest is read from the
processor and the worker's state at scrape time. ``FIML_ARB_METRICS_PORT`` (or ``fiml
arbitrate --metrics-port``) serves them (``agents.metrics``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from agents.arbitration.engine import ArbitrationEngine
from agents.metrics import Reading

__all__ = ["WorkerCounters", "readings"]


@dataclass
class WorkerCounters:
    records_in: dict[str, int] = field(default_factory=dict)  # raw topic -> records
    records_out: dict[str, int] = field(default_factory=dict)  # logical topic -> records
    dead_letters: int = 0  # raw records the processor refused (it resets its own count)
    batches: int = 0


def readings(
    processor: ArbitrationEngine,
    counters: WorkerCounters,
    lag: Callable[[], Mapping[int, int]],
    checkpoint_age_s: Callable[[], Mapping[int, float]],
) -> list[Reading]:
    """The worker's metrics now; ``lag`` and ``checkpoint_age_s`` are per owned partition."""

    def by(
        label: Mapping[str, int] | Mapping[int, int] | Mapping[int, float],
    ) -> dict[tuple[str, ...], float]:
        return {(str(k),): float(v) for k, v in label.items()}

    return [
        Reading(
            "fiml_arbitration_records_in",
            "Raw records taken, per raw topic.",
            "counter",
            by(counters.records_in),
            ("topic",),
        ),
        Reading(
            "fiml_arbitration_records_out",
            "Records written, per derived topic (dead letters included).",
            "counter",
            by(counters.records_out),
            ("topic",),
        ),
        Reading(
            "fiml_arbitration_dead_letters",
            "Raw records refused: malformed, out of the "
            "event-time bounds, or whose arithmetic failed.",
            "counter",
            {(): counters.dead_letters + processor.poison},
        ),
        Reading(
            "fiml_arbitration_out_of_time",
            "Of those, raw records outside the event-time bounds (agents/timebounds.py).",
            "counter",
            {(): processor.out_of_time},
        ),
        Reading(
            "fiml_arbitration_invalid_outputs",
            "Derived records that failed their model's checks: dead-lettered, not written.",
            "counter",
            {(): processor.invalid},
        ),
        Reading(
            "fiml_arbitration_late_ticks",
            "Prices for windows already final: counted, "
            "never merged (partitions this worker owns).",
            "gauge",
            {(): processor.late_ticks()},
        ),
        Reading(
            "fiml_arbitration_skipped",
            "Raw records already in the saved state (a replay after a crash) or duplicates.",
            "counter",
            {(): processor.skipped},
        ),
        Reading(
            "fiml_arbitration_batches",
            "Fetched batches processed.",
            "counter",
            {(): counters.batches},
        ),
        Reading(
            "fiml_arbitration_lag",
            "Raw records behind the end, per raw partition.",
            "gauge",
            by(lag()),
            ("partition",),
        ),
        Reading(
            "fiml_arbitration_checkpoint_age_seconds",
            "Seconds since each owned "
            "partition's transaction was last committed (what a crash would redo).",
            "gauge",
            by(checkpoint_age_s()),
            ("partition",),
        ),
    ]
