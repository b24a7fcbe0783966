"""Errors raised by the infrastructure layer (local broker, topic provisioning).

    InfraError                 one plain sentence: what went wrong and how to fix it
    ├── ToolMissingError       Java or Maven is not installed
    ├── FetchError             Maven could not fetch the broker jars
    ├── BrokerStartError       the broker did not come up (port in use, bad data dir, crash)
    └── BrokerUnreachableError no broker answers at the configured address

The CLI prints ``str(error)`` and exits non-zero; nothing else is needed to act on it.
"""

from __future__ import annotations

__all__ = [
    "BrokerStartError",
    "BrokerUnreachableError",
    "FetchError",
    "InfraError",
    "ToolMissingError",
]


class InfraError(Exception):
    """Base class: the message is one sentence naming the cause and the fix."""


class ToolMissingError(InfraError):
    pass


class FetchError(InfraError):
    pass


class BrokerStartError(InfraError):
    pass


class BrokerUnreachableError(InfraError):
    pass
