"""How uvicorn serves the gateway: its options, and the WebSocket protocol it uses.

Per-message deflate is each client's choice: a client that does not offer it gets none, and no
compression state exists for its connection. A client that offers it is answered with
``server_no_context_takeover; client_no_context_takeover``, so each message is compressed on
its own and an idle compressed connection holds no zlib state either (uvicorn's own setting
keeps a compressor and a decompressor, about 40 KiB, for the whole life of every compressed
connection). ``GatewaySettings.ws_deflate_context_takeover`` restores uvicorn's behaviour: a
better ratio on small messages, at that memory cost per connection.
"""

from __future__ import annotations

import logging
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory
from websockets.server import ServerProtocol

from gateway.settings import GatewaySettings

__all__ = ["StatelessDeflateProtocol", "uvicorn_options"]


class StatelessDeflateProtocol(WebSocketsSansIOProtocol):
    """uvicorn's websockets (sans-I/O) protocol, negotiating deflate without context
    takeover: no zlib state lives between messages."""

    def __init__(self, config: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        if config.ws_per_message_deflate:
            # Same window and memory settings as uvicorn's, minus the kept contexts.
            self.conn = ServerProtocol(
                extensions=[
                    ServerPerMessageDeflateFactory(
                        server_max_window_bits=12,
                        client_max_window_bits=12,
                        server_no_context_takeover=True,
                        client_no_context_takeover=True,
                        compress_settings={"memLevel": 5},
                    )
                ],
                max_size=config.ws_max_size,
                logger=logging.getLogger("uvicorn.error"),
            )


def uvicorn_options(settings: GatewaySettings, deflate: bool = True) -> dict[str, Any]:
    """Keyword arguments for ``uvicorn.run`` / ``uvicorn.Config`` serving the gateway:
    WebSocket protocol, frame size limit and compression offer (``deflate`` and the settings'
    ``ws_per_message_deflate`` must both allow it)."""
    offer = deflate and settings.ws_per_message_deflate
    return {
        "ws": "websockets-sansio" if settings.ws_deflate_context_takeover
        else StatelessDeflateProtocol,
        "ws_max_size": settings.ws_max_size,
        "ws_per_message_deflate": offer,
    }
