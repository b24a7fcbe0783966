"""The FIML Stream gateway: FastAPI WebSocket fan-out of the derived topics, with conflation,
backpressure, resume and replay (docs/WEBSOCKET.md).

Pure parts (``channels``, ``subscription``, ``registry``, ``metrics``) import no network code;
``hub``, ``history``, ``connection``, ``service`` and ``app`` are the I/O shell.
"""

from gateway.app import create_app
from gateway.errors import CLOSE_SLOW_CLIENT, GatewayError, RangeReadError, SlowClientError
from gateway.settings import GatewaySettings

__all__ = [
    "CLOSE_SLOW_CLIENT",
    "GatewayError",
    "GatewaySettings",
    "RangeReadError",
    "SlowClientError",
    "create_app",
]
