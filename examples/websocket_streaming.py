"""Several streams on one connection, auto-reconnect with resume, and a small portfolio monitor.

Run a gateway (``fiml gateway`` or ``fiml up``), then::

    python examples/websocket_streaming.py [ws://127.0.0.1:8000/ws/stream]

It subscribes to arbitrated prices of a portfolio (conflated, one message a second) and to
1-minute candles of BTC/USDT, prints the portfolio's value as prices move, and survives a lost
connection: it reconnects with backoff and asks to resume each subscription from the last
``seq`` it saw, so nothing published meanwhile is missed. If the gateway cannot resume (it
restarted, or we were away too long) it says so and subscribes afresh, with a snapshot.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from dataclasses import dataclass, field
from typing import Any

import websockets

URL = "ws://127.0.0.1:8000/ws/stream"

# What we hold: symbol -> quantity.
PORTFOLIO = {"BTC/USDT": 0.5, "ETH/USDT": 4.0, "SOL/USDT": 30.0}


@dataclass
class Stream:
    """One subscription we want to keep alive, and the last seq we received on it."""

    id: str
    request: dict[str, Any]
    last_seq: int | None = None

    def subscribe_message(self) -> str:
        message = {"type": "subscribe", "subscription_id": self.id, **self.request}
        if self.last_seq is not None:
            message["resume_from"] = self.last_seq  # fill the gap since we lost the connection
        return json.dumps(message)


@dataclass
class Monitor:
    """Latest prices and candles; prints the portfolio's value when it changes."""

    prices: dict[str, float] = field(default_factory=dict)

    def on_price(self, update: dict[str, Any]) -> None:
        self.prices[update["symbol"]] = update["price"]
        if set(PORTFOLIO) <= set(self.prices):
            value = sum(qty * self.prices[s] for s, qty in PORTFOLIO.items())
            detail = ", ".join(f"{s} {self.prices[s]:,.2f}" for s in PORTFOLIO)
            print(f"portfolio {value:,.2f}  ({detail}; confidence "
                  f"{update['confidence']:.2f} on {update['symbol']})")

    def on_candle(self, candle: dict[str, Any]) -> None:
        state = "final" if candle["is_final"] else "open"
        print(f"{candle['symbol']} 1m candle ({state}): O {candle['open']} H {candle['high']} "
              f"L {candle['low']} C {candle['close']}")


STREAMS = [
    Stream("portfolio-prices", {"stream_type": "price", "symbols": list(PORTFOLIO),
                                "interval_ms": 1000}),
    Stream("btc-candles", {"stream_type": "ohlcv", "symbols": ["BTC/USDT"],
                           "params": {"interval": "1m"}, "interval_ms": 1000}),
]


async def session(url: str, streams: dict[str, Stream], monitor: Monitor) -> None:
    """One connection: (re)subscribe everything, then handle messages until it drops."""
    async with websockets.connect(url) as ws:
        for stream in streams.values():
            await ws.send(stream.subscribe_message())
        async for raw in ws:
            message = json.loads(raw)
            kind = message["type"]
            stream = streams.get(message.get("subscription_id", ""))
            if kind == "data" and stream is not None:
                stream.last_seq = message["seq"]
                handle = monitor.on_candle if message["stream_type"] == "ohlcv" else (
                    monitor.on_price)
                for record in message["data"]:
                    handle(record)
            elif kind == "subscription_ack":
                resumed = message.get("resumed_from")
                print(f"subscribed {message['subscription_id']}"
                      + (f" (resumed after seq {resumed})" if resumed is not None else ""))
            elif kind == "error" and message["error_code"] == "RESUME_UNAVAILABLE":
                # Not resumable here: start that stream afresh (it gets a snapshot).
                print(f"cannot resume: {message['message']}")
                if stream is not None:
                    stream.last_seq = None
                    await ws.send(stream.subscribe_message())
            elif kind == "error":
                print(f"error {message['error_code']}: {message['message']}")
            # heartbeats and unsubscribe acks need nothing


async def main(url: str = URL) -> None:
    streams = {s.id: s for s in STREAMS}
    monitor = Monitor()
    delay = 0.5
    while True:
        try:
            await session(url, streams, monitor)
            delay = 0.5
        except (OSError, websockets.ConnectionClosed) as exc:
            print(f"connection lost ({exc!r}); reconnecting in {delay:.1f} s")
        await asyncio.sleep(delay)  # backoff before reconnecting
        delay = min(delay * 2, 10.0)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C ends it
        asyncio.run(main(*sys.argv[1:2]))
