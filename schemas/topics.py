"""The topic registry: every Kafka topic FIML Stream reads or writes, declared once.

Ingestion, arbitration, the gateway, provisioning (``fiml topics create``) and the tests all
take topic names and settings from here. Names can be prefixed with ``FIML_TOPIC_PREFIX`` so
that several deployments (or test runs) share one cluster.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "DAY_MS",
    "TOPICS",
    "TopicSpec",
    "topic_name",
]

DAY_MS = 24 * 60 * 60 * 1000

CleanupPolicy = Literal["delete", "compact"]


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """One topic: its logical name, what its key and value are, and its broker settings."""

    name: str
    key: str
    value: str
    partitions: int
    retention_ms: int  # -1 keeps records forever
    cleanup_policy: CleanupPolicy = "delete"
    extra_configs: dict[str, str] = field(default_factory=dict)

    def configs(self) -> dict[str, str]:
        """The topic-level configs to create the topic with, as Kafka strings."""
        configs = {
            "cleanup.policy": self.cleanup_policy,
            "retention.ms": str(self.retention_ms),
        }
        configs.update(self.extra_configs)
        return configs


# Partition counts: the raw and derived topics share one count so that a symbol's raw ticks and
# its derived records live in partitions of the same number (co-partitioning, which Faust
# needs for tables keyed by symbol).
PARTITIONS = int(os.environ.get("FIML_PARTITIONS", "4"))
RAW_RETENTION_MS = int(os.environ.get("FIML_RAW_RETENTION_MS", str(7 * DAY_MS)))
DERIVED_RETENTION_MS = int(os.environ.get("FIML_DERIVED_RETENTION_MS", str(7 * DAY_MS)))

TOPICS: dict[str, TopicSpec] = {
    spec.name: spec
    for spec in (
        # The event log: ticks and trades in one topic, so that a partition's order is the
        # order the arbitration applies them in, for a live run, a rebuild and a restart alike
        # (docs/RELIABILITY.md, "One order"). A record with a ``trade_id`` is a RawTrade.
        TopicSpec(
            "fiml.raw", "canonical symbol", "RawTick or RawTrade", PARTITIONS, RAW_RETENTION_MS
        ),
        TopicSpec(
            "fiml.provider.health",
            "provider id, or provider|symbol for arbitration's per-symbol measures",
            "ProviderHealth",
            1,
            -1,
            cleanup_policy="compact",
        ),
        TopicSpec(
            "fiml.prices", "canonical symbol", "PriceUpdate", PARTITIONS, DERIVED_RETENTION_MS
        ),
        TopicSpec(
            "fiml.quotes", "canonical symbol", "QuoteUpdate", PARTITIONS, DERIVED_RETENTION_MS
        ),
        TopicSpec(
            "fiml.trades", "canonical symbol", "TradeUpdate", PARTITIONS, DERIVED_RETENTION_MS
        ),
        TopicSpec(
            "fiml.ohlcv", "canonical symbol", "OHLCVUpdate", PARTITIONS, DERIVED_RETENTION_MS
        ),
        TopicSpec(
            "fiml.deadletter",
            "original key",
            "original bytes (header 'fiml-error' says why)",
            1,
            30 * DAY_MS,
        ),
        TopicSpec("fiml.sim.truth", "canonical symbol", "RawTick", PARTITIONS, RAW_RETENTION_MS),
    )
}


def topic_name(logical: str) -> str:
    """The real topic name for a logical one, with ``FIML_TOPIC_PREFIX`` applied.

    Raises:
        KeyError: if ``logical`` is not a registered topic.
    """
    spec = TOPICS[logical]
    return os.environ.get("FIML_TOPIC_PREFIX", "") + spec.name
