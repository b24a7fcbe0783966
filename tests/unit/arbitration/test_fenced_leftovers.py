"""A fenced producer's shielded batch futures are not logged as crashes; other errors are."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

from aiokafka.errors import ProducerFenced

from agents.arbitration.worker.transactions import quiet_fenced_leftovers


def test_only_fenced_leftovers_are_quieted() -> None:
    loop = asyncio.new_event_loop()
    seen: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: seen.append(context))
    quiet_fenced_leftovers(loop)
    try:
        for exc in (ProducerFenced(), ValueError("a real bug")):
            future = loop.create_future()
            future.set_exception(exc)
            del future  # never retrieved: asyncio reports it when it is collected
            gc.collect()
        loop.call_exception_handler({"message": "something else", "exception": ProducerFenced()})
    finally:
        loop.close()
    reported = [(type(c.get("exception")).__name__, c["message"]) for c in seen]
    assert reported == [
        ("ValueError", "Future exception was never retrieved"),
        ("ProducerFenced", "something else"),
    ]
