"""Where each ingestion event goes: topic, key, encoded value, dead-letter headers (pure).

``prepare(event)`` routes an event to its topic, keys it (canonical symbol; provider id for
health), encodes it once with ``schemas.codec`` and checks that the bytes decode back into a
valid record with a canonical symbol. A record that fails goes to ``fiml.deadletter`` with the
reason in its headers (``agents.deadletter``), as do ``Rejected`` provider payloads. Nothing
here touches Kafka, so it is tested without a broker.
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

from agents.deadletter import DEADLETTER_TOPIC, deadletter_headers
from agents.ingest.base import Event, Rejected
from agents.ingest.simulator import TRUTH_PROVIDER
from agents.timebounds import TimeBounds
from schemas import symbols as sym
from schemas.codec import decode, encode
from schemas.errors import DecodeError, SymbolError
from schemas.records import ProviderHealth, RawTick
from schemas.topics import topic_name

__all__ = ["Outgoing", "is_deadletter", "prepare"]

_BOUNDS = TimeBounds()


class Outgoing(NamedTuple):
    """One Kafka record ready to send (topic is the real, prefixed name)."""

    topic: str
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]] | None = None


def is_deadletter(out: Outgoing) -> bool:
    """True for a record bound for the dead-letter topic (it carries the reason headers)."""
    return out.headers is not None


@lru_cache(maxsize=4096)
def _symbol_problem(symbol: str) -> str | None:
    try:
        return None if sym.normalize(symbol) == symbol else "symbol is not in canonical form"
    except SymbolError as error:
        return str(error)


def prepare(event: Event, validate: bool = True, bounds: TimeBounds = _BOUNDS) -> Outgoing:
    """The Kafka record for ``event`` (dead-letter record if it fails validation).

    With ``validate`` the encoded bytes are decoded again: what reaches the topic is exactly
    what any consumer will parse, whatever the producer of the model did (``model_construct``).
    A raw tick or trade whose event time is outside ``bounds`` (too far ahead of its ingest
    time, or too old for live data) is dead-lettered with the reason, never written to the log.
    """
    if isinstance(event, Rejected):
        key = event.key.encode() if event.key else None
        return Outgoing(
            topic_name(DEADLETTER_TOPIC), key, event.payload,
            deadletter_headers(event.reason, event.provider),
        )  # fmt: skip
    if isinstance(event, ProviderHealth):
        logical, key_text = "fiml.provider.health", event.provider
    else:  # ticks and trades share the raw log; the simulator's truth has its own topic
        truth = isinstance(event, RawTick) and event.provider == TRUTH_PROVIDER
        logical, key_text = ("fiml.sim.truth" if truth else "fiml.raw"), event.symbol
    value = encode(event)
    key = key_text.encode()
    problem = None if isinstance(event, ProviderHealth) else _symbol_problem(key_text)
    if problem is None and not isinstance(event, ProviderHealth):
        problem = bounds.problem(
            event.event_time_ms, event.ingest_time_ms, event.asset_type.value, event.history
        )
    if validate and problem is None:
        try:
            decode(type(event), value)
        except DecodeError as error:
            problem = str(error)
    if problem is not None:
        reason = f"invalid {type(event).__name__}: {problem}"
        return Outgoing(
            topic_name(DEADLETTER_TOPIC), key, value, deadletter_headers(reason, event.provider)
        )
    return Outgoing(topic_name(logical), key, value)
