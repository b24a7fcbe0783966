"""Every error the ``gateway`` package raises, in one place.

The hierarchy::

    GatewayError                 base
    ├── SlowClientError          a client did not keep up and is being disconnected (4000)
    └── RangeReadError           a topic range could not be read (replay, resume, REST)

Errors in client *messages* are ``schemas.errors.ProtocolError``: they become ``error``
messages and the connection stays open.
"""

from __future__ import annotations

__all__ = [
    "CLOSE_AUTH",
    "CLOSE_LIFETIME",
    "CLOSE_RATE_LIMITED",
    "CLOSE_SLOW_CLIENT",
    "CLOSE_TOO_MANY_CONNECTIONS",
    "GatewayError",
    "RangeReadError",
    "SlowClientError",
]

# WebSocket close codes (private-use range 4000-4999), one per reason (docs/WEBSOCKET.md).
#: The client fell too far behind.
CLOSE_SLOW_CLIENT = 4000
#: No valid credentials in time, or they expired and were not refreshed.
CLOSE_AUTH = 4001
#: Too many refused messages in a row (over the messages-a-second limit).
CLOSE_RATE_LIMITED = 4008
#: The connection reached its maximum lifetime: reconnect (and resume).
CLOSE_LIFETIME = 4010
#: Too many connections from this IP address or with this key.
CLOSE_TOO_MANY_CONNECTIONS = 4029


class GatewayError(Exception):
    """Base class of every error raised by ``gateway``."""


class SlowClientError(GatewayError):
    """The client's outgoing buffer stayed full; it is disconnected with ``CLOSE_SLOW_CLIENT``."""


class RangeReadError(GatewayError):
    """A range of a topic could not be read: offsets gone (retention) or the broker failed."""
