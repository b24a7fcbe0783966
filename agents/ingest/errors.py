"""Every error the ``agents.ingest`` package raises, in one place.

The hierarchy::

    IngestError                      base: anything ingestion refuses or cannot do
    ├── IllegalTransition            a provider state change the state machine forbids
    ├── ProviderError                a provider call failed (``retryable``: may trying again help?)
    │   └── CircuitOpenError         the circuit breaker is open: the call was not even tried
    ├── PayloadError                 a provider payload cannot become a record (says why)
    ├── ReplayFormatError            a replay file is not CSV, JSON Lines or a JSON trade list
    └── ProducerClosedError          a record was offered to a producer that is not running
"""

from __future__ import annotations

__all__ = [
    "MALFORMED",
    "CircuitOpenError",
    "IllegalTransition",
    "IngestError",
    "PayloadError",
    "ProducerClosedError",
    "ProviderError",
    "ReplayFormatError",
]


class IngestError(Exception):
    """Base class of every error raised by ``agents.ingest``."""


class IllegalTransition(IngestError):
    """A provider was asked to move between two states that the lifecycle does not connect."""

    def __init__(self, provider: str, current: str, target: str) -> None:
        self.provider = provider
        self.current = current
        self.target = target
        super().__init__(f"{provider}: illegal state transition {current} -> {target}")


class ProviderError(IngestError):
    """A provider call failed.

    Attributes:
        retryable: True for network trouble, timeouts and rate limits (trying later can work);
            False for bad symbols, bad API keys and other answers that will not change.
    """

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        self.retryable = retryable
        super().__init__(message)


class CircuitOpenError(ProviderError):
    """The circuit breaker is open; the call was refused without touching the network."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=True)


class PayloadError(IngestError):
    """A provider payload that cannot be turned into a record (missing or invalid fields)."""


#: What converting a malformed payload raises (a string where a number was, a list where an
#: object was, a number too large for an int): each adapter turns these into ``PayloadError``,
#: so that the payload is dead-lettered and the provider stays up.
MALFORMED: tuple[type[Exception], ...] = (
    TypeError,
    ValueError,
    KeyError,
    AttributeError,
    ArithmeticError,
)


class ReplayFormatError(IngestError):
    """A replay file in an unknown or broken format."""


class ProducerClosedError(IngestError):
    """A record was given to a producer that is not started (or already stopped)."""
