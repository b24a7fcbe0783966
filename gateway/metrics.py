"""Counters and gauges of one gateway process, rendered in the Prometheus text format.

Rendered by hand (the format is a few lines of text) so the gateway needs no extra dependency.
Counters are plain ints bumped on the hot path; gauges are read when ``/metrics`` is scraped.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

__all__ = ["Metrics", "render"]


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
    decode_errors: int = 0
    hub_errors: int = 0
    records_in: dict[str, int] = field(default_factory=dict)


_BUFFERED_HELP = {
    "pending_updates": "Updates held for subscriptions, not yet sent (all connections).",
    "queued_frames": "Frames waiting in connection outboxes (all connections).",
    "max_pending_updates": "Updates held for the connection holding the most.",
    "max_queued_frames": "Frames waiting in the fullest connection outbox.",
}


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _family(
    name: str, kind: str, help_text: str, samples: Iterable[tuple[Mapping[str, str], float]]
) -> list[str]:
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
    for labels, value in samples:
        label_text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
        lines.append(f"{name}{{{label_text}}} {value:g}" if label_text else f"{name} {value:g}")
    return lines


def render(
    metrics: Metrics,
    connections: int,
    subscriptions: Mapping[str, int],
    lag: Mapping[str, int],
    buffered: Mapping[str, int] | None = None,
) -> str:
    """The Prometheus exposition text (version 0.0.4) for ``/metrics``.

    ``buffered``: ``pending_updates`` and ``queued_frames`` summed over the connections, and
    the largest single connection's (``max_pending_updates``, ``max_queued_frames``).
    """
    m = metrics
    lines: list[str] = []
    lines += _family("fiml_gateway_connections", "gauge", "Open WebSocket connections.",
                     [({}, connections)])
    for key, value in sorted((buffered or {}).items()):
        lines += _family(f"fiml_gateway_{key}", "gauge", _BUFFERED_HELP.get(key, key),
                         [({}, value)])
    lines += _family("fiml_gateway_connections_total", "counter",
                     "WebSocket connections accepted.", [({}, m.connections_total)])
    lines += _family("fiml_gateway_subscriptions", "gauge", "Active subscriptions by stream type.",
                     [({"stream_type": k}, v) for k, v in sorted(subscriptions.items())])
    lines += _family("fiml_gateway_messages_sent_total", "counter",
                     "WebSocket messages sent (all types).", [({}, m.messages_sent)])
    lines += _family("fiml_gateway_updates_sent_total", "counter",
                     "Records delivered inside data messages.", [({}, m.updates_sent)])
    lines += _family("fiml_gateway_bytes_sent_total", "counter",
                     "Bytes of WebSocket messages sent (before compression).",
                     [({}, m.bytes_sent)])
    lines += _family("fiml_gateway_updates_dropped_total", "counter",
                     "Updates conflated away because a real-time client was behind.",
                     [({}, m.updates_dropped)])
    lines += _family("fiml_gateway_conflations_total", "counter",
                     "Times a real-time subscription overflowed max_pending_updates and fell "
                     "back to latest-value-per-symbol conflation.", [({}, m.conflations)])
    lines += _family("fiml_gateway_slow_disconnects_total", "counter",
                     "Clients disconnected for not keeping up (close code 4000).",
                     [({}, m.slow_disconnects)])
    lines += _family("fiml_gateway_client_errors_total", "counter",
                     "Error messages sent for bad client input.", [({}, m.client_errors)])
    lines += _family("fiml_gateway_decode_errors_total", "counter",
                     "Records skipped because they did not decode or route (any fault of one "
                     "record; each is logged with topic, partition and offset).",
                     [({}, m.decode_errors)])
    lines += _family("fiml_gateway_hub_errors_total", "counter",
                     "Fetched batches whose dispatch raised (a bug; logged with the traceback).",
                     [({}, m.hub_errors)])
    lines += _family("fiml_gateway_records_consumed_total", "counter",
                     "Records read from Kafka by the hub, per topic.",
                     [({"topic": k}, v) for k, v in sorted(m.records_in.items())])
    lines += _family("fiml_gateway_consumer_lag", "gauge",
                     "Records behind the end of each topic (sum over partitions).",
                     [({"topic": k}, v) for k, v in sorted(lag.items())])
    return "\n".join(lines) + "\n"
