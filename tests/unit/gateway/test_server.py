"""The gateway's uvicorn protocol, driven through a fake transport (no network, no broker)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import uvicorn
from uvicorn.server import ServerState
from websockets.frames import Frame, Opcode

from gateway.server import StatelessDeflateProtocol, _Flag, _Inbox

HANDSHAKE = (
    b"GET /ws/stream HTTP/1.1\r\nHost: gateway.test\r\nUpgrade: websocket\r\n"
    b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\nUser-Agent: test\r\n\r\n"
)


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += data

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


async def settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)  # let the app's task run its next step


async def test_inbox_keeps_order_and_wakes_its_reader() -> None:
    inbox = _Inbox()
    inbox.put_nowait(1)
    assert not inbox.empty() and await inbox.get() == 1 and inbox.empty()
    reader = asyncio.create_task(inbox.get())
    await settle()
    with pytest.raises(RuntimeError):
        await inbox.get()  # one reader only
    inbox.put_nowait(2)
    inbox.put_nowait(3)
    assert await reader == 2 and await inbox.get() == 3


async def test_inbox_keeps_items_when_its_reader_is_cancelled() -> None:
    inbox = _Inbox()
    reader = asyncio.create_task(inbox.get())
    await settle()
    reader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reader
    inbox.put_nowait("x")
    assert await inbox.get() == "x"


async def test_flag_blocks_waiters_until_set() -> None:
    flag = _Flag()
    await flag.wait()  # starts set
    flag.clear()
    waiters = [asyncio.create_task(flag.wait()) for _ in range(2)]
    cancelled = asyncio.create_task(flag.wait())
    await settle()
    assert not any(w.done() for w in waiters)
    cancelled.cancel()
    await settle()
    flag.set()
    await asyncio.gather(*waiters)
    assert flag.is_set()


async def test_protocol_drops_handshake_headers_and_relays_messages() -> None:
    received: list[Any] = []
    sent = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        assert (await receive())["type"] == "websocket.connect"
        assert b"gateway.test" in [value for _, value in scope["headers"]]  # kept for the app
        await send({"type": "websocket.accept"})
        received.append(await receive())
        await send({"type": "websocket.send", "text": "pong"})
        sent.set()
        received.append(await receive())

    config = uvicorn.Config(app, ws=StatelessDeflateProtocol, log_level="warning")
    config.load()
    protocol = StatelessDeflateProtocol(config, ServerState(), {}, asyncio.get_running_loop())
    transport = FakeTransport()
    protocol.connection_made(transport)
    protocol.data_received(HANDSHAKE)
    await settle()
    assert transport.written.startswith(b"HTTP/1.1 101")
    assert not protocol.request.headers and not protocol.response.headers

    protocol.pause_writing()  # the client's kernel buffer is full: sends wait
    protocol.data_received(Frame(Opcode.TEXT, b"ping").serialize(mask=True))
    await settle()
    assert received == [{"type": "websocket.receive", "text": "ping"}]
    assert not sent.is_set()
    protocol.resume_writing()
    await asyncio.wait_for(sent.wait(), 5)
    assert transport.written.endswith(b"pong")

    protocol.connection_lost(None)
    await settle()
    assert received[-1] == {"type": "websocket.disconnect", "code": 1005}
    assert not protocol.tasks
