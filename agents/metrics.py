"""Prometheus metrics of the agents (ingestion, arbitration), through prometheus-client.

Each agent already keeps its counts (the producer's ``ProducerStats``, the processor's
counters); a collector reads them when Prometheus scrapes, so nothing is counted twice and the
hot path gains no call. ``serve(port, read)`` exposes them on ``http://HOST:port/metrics``
(prometheus-client's server, in a thread of its own); ``FIML_METRICS_HOST`` (default
``127.0.0.1``: metrics stay inside the trust boundary unless the operator opens them) sets the
address. docs/RELIABILITY.md lists the metrics.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = ["Reading", "collect", "registry_for", "serve"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Reading:
    """One metric family: ``name`` (without ``_total`` for counters), help, kind, and its
    samples as label values -> value (``{(): n}`` for an unlabelled one)."""

    name: str
    help: str
    kind: str  # "counter" or "gauge"
    samples: Mapping[tuple[str, ...], float]
    labels: tuple[str, ...] = field(default=())


def collect(readings: Iterable[Reading]) -> list[Metric]:
    """prometheus-client metric families of ``readings``."""
    out: list[Metric] = []
    for r in readings:
        family: CounterMetricFamily | GaugeMetricFamily
        if r.kind == "counter":
            family = CounterMetricFamily(r.name, r.help, labels=list(r.labels))
        else:
            family = GaugeMetricFamily(r.name, r.help, labels=list(r.labels))
        for values, value in r.samples.items():
            family.add_metric(list(values), value)
        out.append(family)
    return out


class _Collector(Collector):
    def __init__(self, read: Callable[[], Iterable[Reading]]) -> None:
        self._read = read

    def collect(self) -> Iterable[Metric]:
        return collect(self._read())


def registry_for(read: Callable[[], Iterable[Reading]]) -> CollectorRegistry:
    """A registry whose one collector calls ``read`` at every scrape."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(read))
    return registry


def serve(port: int, read: Callable[[], Iterable[Reading]]) -> bool:
    """Serve ``read``'s metrics on ``port`` (a daemon thread; it ends with the process).
    False, with a warning logged, if the port cannot be had: an agent runs on without metrics
    rather than not at all."""
    host = os.environ.get("FIML_METRICS_HOST", "127.0.0.1")
    try:
        start_http_server(port, addr=host, registry=registry_for(read))
    except OSError as error:
        log.warning("metrics: cannot serve on %s:%d (%s); running without them", host, port, error)
        return False
    return True
