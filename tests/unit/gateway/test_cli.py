"""``fiml gateway`` stops serving when its hub dies, and says it failed (exit 1), so that a
supervisor restarts it rather than leaving a gateway that accepts clients and sends nothing."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from gateway.cli import _serve


class FakeServer:
    """uvicorn.Server's two members that ``_serve`` uses."""

    def __init__(self) -> None:
        self.should_exit = False

    async def serve(self) -> None:
        while not self.should_exit:
            await asyncio.sleep(0.01)


async def test_the_gateway_stops_when_its_hub_fails() -> None:
    server, hub = FakeServer(), SimpleNamespace(failed=asyncio.Event())
    serving = asyncio.create_task(_serve(server, hub))  # type: ignore[arg-type]
    await asyncio.sleep(0.05)
    assert not serving.done()
    hub.failed.set()
    assert await asyncio.wait_for(serving, 5) is True


async def test_a_signal_stops_it_as_a_success() -> None:
    server: Any = FakeServer()
    serving = asyncio.create_task(_serve(server, SimpleNamespace(failed=asyncio.Event())))  # type: ignore[arg-type]
    await asyncio.sleep(0.05)
    server.should_exit = True  # what uvicorn does on SIGINT / SIGTERM
    assert await asyncio.wait_for(serving, 5) is False
