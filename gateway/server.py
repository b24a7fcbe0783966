"""How uvicorn serves the gateway: its options, and the WebSocket protocol it uses.

Per-message deflate is each client's choice: a client that does not offer it gets none, and no
compression state exists for its connection. A client that offers it is answered with
``server_no_context_takeover; client_no_context_takeover``, so each message is compressed on
its own and an idle compressed connection holds no zlib state either (uvicorn's own setting
keeps a compressor and a decompressor, about 40 KiB, for the whole life of every compressed
connection). ``GatewaySettings.ws_deflate_context_takeover`` restores uvicorn's behaviour: a
better ratio on small messages, at that memory cost per connection.

Either way the protocol holds about 8 KiB less per idle connection than uvicorn's
(``LeanProtocol``; RSS per idle connection in ``bench.fanout``, 24.9 -> 17.0 KiB): a list
instead of an ``asyncio.Queue`` for the client's messages, a flag instead of an
``asyncio.Event`` for write flow control, and no handshake headers once the handshake is done.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory
from websockets.server import ServerProtocol

from gateway.settings import GatewaySettings

__all__ = ["LeanProtocol", "StatelessDeflateProtocol", "uvicorn_options"]


class LeanProtocol(WebSocketsSansIOProtocol):
    """uvicorn's websockets (sans-I/O) protocol, holding less for each idle connection."""

    def __init__(self, config: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        # uvicorn only calls put_nowait/get/empty on its queue and set/clear/wait on
        # ``writable``; asyncio's Queue and Event hold five deques (~4 KiB) per connection.
        self.queue = _Inbox()  # type: ignore[assignment]
        self.writable = _Flag()  # type: ignore[assignment]

    def start_keepalive(self) -> None:
        # uvicorn calls this once, right after writing the accepted handshake's response.
        # Neither the parsed request nor the response is read again (the app has the headers
        # in its scope), yet uvicorn and websockets' parser keep both objects for the
        # connection's life: their headers are ~4 KiB of it.
        super().start_keepalive()
        self.request.headers.clear()
        self.response.headers.clear()


class StatelessDeflateProtocol(LeanProtocol):
    """``LeanProtocol`` negotiating deflate without context takeover: no zlib state lives
    between messages."""

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


class _Inbox:
    """The client's messages waiting for the app: uvicorn's ``queue`` for one reader."""

    __slots__ = ("_items", "_waiter")

    def __init__(self) -> None:
        self._items: list[Any] = []
        self._waiter: asyncio.Future[None] | None = None

    def put_nowait(self, item: Any) -> None:
        self._items.append(item)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def empty(self) -> bool:
        return not self._items

    async def get(self) -> Any:
        """Raises: RuntimeError: another coroutine is already waiting (one reader only)."""
        while not self._items:
            if self._waiter is not None:
                raise RuntimeError("two coroutines are reading the same WebSocket")
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._items.pop(0)


class _Flag:
    """An ``asyncio.Event`` (set, clear, wait) that allocates nothing until someone waits."""

    __slots__ = ("_set", "_waiters")

    def __init__(self) -> None:
        self._set = True
        self._waiters: list[asyncio.Future[None]] = []

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        self._set = True
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        self._set = False

    async def wait(self) -> None:
        if self._set:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)


def uvicorn_options(settings: GatewaySettings, deflate: bool = True) -> dict[str, Any]:
    """Keyword arguments for ``uvicorn.run`` / ``uvicorn.Config`` serving the gateway:
    WebSocket protocol, frame size limit and compression offer (``deflate`` and the settings'
    ``ws_per_message_deflate`` must both allow it)."""
    offer = deflate and settings.ws_per_message_deflate
    return {
        "ws": LeanProtocol if settings.ws_deflate_context_takeover else StatelessDeflateProtocol,
        "ws_max_size": settings.ws_max_size,
        "ws_per_message_deflate": offer,
    }
