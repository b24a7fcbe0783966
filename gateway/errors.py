"""Every error the ``gateway`` package raises, in one place.

The hierarchy::

    GatewayError                 base
    ├── SlowClientError          a client did not keep up and is being disconnected (4000)
    └── RangeReadError           a topic range could not be read (replay, resume, REST)

Errors in client *messages* are ``schemas.errors.ProtocolError``: they become ``error``
messages and the connection stays open.
"""

from __future__ import annotations

__all__ = ["CLOSE_SLOW_CLIENT", "GatewayError", "RangeReadError", "SlowClientError"]

#: WebSocket close code for a client that fell too far behind (private-use range 4000-4999).
CLOSE_SLOW_CLIENT = 4000


class GatewayError(Exception):
    """Base class of every error raised by ``gateway``."""


class SlowClientError(GatewayError):
    """The client's outgoing buffer stayed full; it is disconnected with ``CLOSE_SLOW_CLIENT``."""


class RangeReadError(GatewayError):
    """A range of a topic could not be read: offsets gone (retention) or the broker failed."""
