"""Dead letters: records that cannot be processed go to ``fiml.deadletter``, never nowhere.

The dead-letter record keeps the original key and the original bytes untouched; headers say why
it was rejected and where it came from, so that it can be inspected and replayed.
"""

from __future__ import annotations

__all__ = ["DEADLETTER_TOPIC", "REASON_HEADER", "deadletter_headers"]

DEADLETTER_TOPIC = "fiml.deadletter"  # logical name: pass through schemas.topics.topic_name
REASON_HEADER = "fiml-error"
_MAX_REASON = 2000  # a header is not a log file: keep the first part of a long error


def deadletter_headers(
    reason: str,
    source: str,
    partition: int | None = None,
    offset: int | None = None,
) -> list[tuple[str, bytes]]:
    """Kafka headers for a rejected record: the reason and its origin (topic or provider)."""
    headers = [
        (REASON_HEADER, reason[:_MAX_REASON].encode()),
        ("fiml-source", source.encode()),
    ]
    if partition is not None:
        headers.append(("fiml-partition", str(partition).encode()))
    if offset is not None:
        headers.append(("fiml-offset", str(offset).encode()))
    return headers
