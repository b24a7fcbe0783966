"""Counters and gauges of one gateway process, in the Prometheus text format.

Counters are plain ints bumped on the hot path (a prometheus-client ``Counter`` takes a lock
per increment); at a scrape they and the gauges (connections, lag) become prometheus-client
metric families, which it renders.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = ["Metrics", "families", "render"]


@dataclass(slots=True)
class Metrics:
    """Monotonic counters; the app adds the gauges (connections, lag) when rendering."""

    connections_total: int = 0
    messages_sent: int = 0
    updates_sent: int = 0
    bytes_sent: int = 0
    updates_dropped: int = 0
    conflations: int = 0
    slow_disconnects: int = 0
    client_errors: int = 0
    auth_failures: int = 0  # refused credentials (handshake or auth message)
    rate_limited: int = 0  # client messages refused over the messages-a-second limit
    refused_connections: int = 0  # origin, connection limits, no credentials in time
    decode_errors: int = 0
    hub_errors: int = 0
    records_in: dict[str, int] = field(default_factory=dict)


_BUFFERED_HELP = {
    "pending_updates": "Updates held for subscriptions, not yet sent (all connections).",
    "queued_frames": "Frames waiting in connection outboxes (all connections).",
    "max_pending_updates": "Updates held for the connection holding the most.",
    "max_queued_frames": "Frames waiting in the fullest connection outbox.",
}


def _counter(name: str, help_text: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, help_text, value=value)


def _gauge(name: str, help_text: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, help_text, value=value)


def _labelled(
    family: CounterMetricFamily | GaugeMetricFamily, label_values: Mapping[str, float]
) -> CounterMetricFamily | GaugeMetricFamily:
    for label, value in sorted(label_values.items()):
        family.add_metric([label], value)
    return family


def families(
    metrics: Metrics,
    connections: int,
    subscriptions: Mapping[str, int],
    lag: Mapping[str, int],
    buffered: Mapping[str, int] | None = None,
) -> list[Metric]:
    """Every metric family of the gateway now. ``buffered``: ``pending_updates`` and
    ``queued_frames`` summed over the connections, and the largest single connection's
    (``max_pending_updates``, ``max_queued_frames``)."""
    m = metrics
    out: list[Metric] = [
        _gauge("fiml_gateway_connections", "Open WebSocket connections.", connections)
    ]
    out += [
        _gauge(f"fiml_gateway_{key}", _BUFFERED_HELP.get(key, key), value)
        for key, value in sorted((buffered or {}).items())
    ]
    out += [
        _counter(
            "fiml_gateway_connections_accepted",
            "WebSocket connections accepted.",
            m.connections_total,
        ),
        _labelled(
            GaugeMetricFamily(
                "fiml_gateway_subscriptions",
                "Active subscriptions by stream type.",
                labels=["stream_type"],
            ),
            subscriptions,
        ),
        _counter(
            "fiml_gateway_messages_sent", "WebSocket messages sent (all types).", m.messages_sent
        ),
        _counter(
            "fiml_gateway_updates_sent", "Records delivered inside data messages.", m.updates_sent
        ),
        _counter(
            "fiml_gateway_bytes_sent",
            "Bytes of WebSocket messages sent (before compression).",
            m.bytes_sent,
        ),
        _counter(
            "fiml_gateway_updates_dropped",
            "Updates conflated away because a real-time client was behind.",
            m.updates_dropped,
        ),
        _counter(
            "fiml_gateway_conflations",
            "Times a real-time subscription overflowed "
            "max_pending_updates and fell back to latest-value-per-symbol conflation.",
            m.conflations,
        ),
        _counter(
            "fiml_gateway_slow_disconnects",
            "Clients disconnected for not keeping up (close code 4000).",
            m.slow_disconnects,
        ),
        _counter(
            "fiml_gateway_client_errors",
            "Error messages sent for bad client input.",
            m.client_errors,
        ),
        _counter(
            "fiml_gateway_auth_failures",
            "Credentials refused (unknown, revoked, expired or malformed).",
            m.auth_failures,
        ),
        _counter(
            "fiml_gateway_rate_limited",
            "Client messages refused over the messages-a-second limit.",
            m.rate_limited,
        ),
        _counter(
            "fiml_gateway_refused_connections",
            "Connections refused or closed by a limit: origin, connections per IP or key, "
            "credentials missing in time.",
            m.refused_connections,
        ),
        _counter(
            "fiml_gateway_decode_errors",
            "Records skipped because they did not decode "
            "or route (any fault of one record; each is logged with topic, partition and "
            "offset).",
            m.decode_errors,
        ),
        _counter(
            "fiml_gateway_hub_errors",
            "Fetched batches whose dispatch raised (a bug; logged with the traceback).",
            m.hub_errors,
        ),
        _labelled(
            CounterMetricFamily(
                "fiml_gateway_records_consumed",
                "Records read from Kafka by the hub, per topic.",
                labels=["topic"],
            ),
            m.records_in,
        ),
        _labelled(
            GaugeMetricFamily(
                "fiml_gateway_consumer_lag",
                "Records behind the end of each topic (sum over partitions).",
                labels=["topic"],
            ),
            lag,
        ),
    ]
    return out


class _Families(Collector):
    def __init__(self, metrics: list[Metric]) -> None:
        self._metrics = metrics

    def collect(self) -> Iterable[Metric]:
        return self._metrics


def render(
    metrics: Metrics,
    connections: int,
    subscriptions: Mapping[str, int],
    lag: Mapping[str, int],
    buffered: Mapping[str, int] | None = None,
) -> str:
    """The Prometheus exposition text (version 0.0.4) for ``/metrics``, by prometheus-client."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(families(metrics, connections, subscriptions, lag, buffered)))
    return generate_latest(registry).decode()
