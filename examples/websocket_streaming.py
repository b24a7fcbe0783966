#!/usr/bin/env python3
"""WebSocket streaming examples, in the shape of the FIML seed's: the same four behind its menu.

1. Simple price streaming (``/ws/prices/{symbols}``)
2. Advanced multi-stream (prices and candles on one ``/ws/stream`` connection, then unsubscribe)
3. Auto-reconnection (reconnects with backoff and resumes where it left off)
4. Portfolio monitor (two price subscriptions, the portfolio's value as prices move)

Run a gateway (``make demo``), then::

    python examples/websocket_streaming.py                       # the menu: 1-4 or all
    python examples/websocket_streaming.py --example all --updates 5 --url ws://localhost:8000
    python examples/websocket_streaming.py --example all --binary   # msgpack data frames

Every key read here is one of the seed's (docs/WEBSOCKET.md, "Data items"); example 3 uses
the Python client ``fiml_stream``, which reconnects and resumes so that a reconnect misses
nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
from datetime import datetime
from typing import Any

import ormsgpack
import websockets

from fiml_stream import FimlStream, records_of

URL = "ws://localhost:8000"

#: ``--binary``: data messages as msgpack binary frames (docs/WEBSOCKET.md, "Binary frames");
#: every other message stays JSON text.
BINARY = False


def wire(uri: str) -> str:
    """``uri``, asking for binary data frames when ``--binary`` was given."""
    return f"{uri}?format=msgpack" if BINARY else uri


def decode(raw: str | bytes) -> dict[str, Any]:
    """A message: a binary frame is a msgpack data message, a text frame JSON."""
    message: dict[str, Any] = ormsgpack.unpackb(raw) if isinstance(raw, bytes) else json.loads(raw)
    return message


def when(iso: str) -> datetime:
    """An ISO 8601 timestamp, parsed as the seed's clients do."""
    return datetime.fromisoformat(iso.replace("Z", "+00:00"))


async def stream_prices_simple(base: str, updates: int) -> None:
    """Simple example: the prices of three symbols on the ``/ws/prices/{symbols}`` shortcut."""
    print("=== Simple Price Streaming ===\n")
    uri = f"{base}/ws/prices/AAPL,GOOGL,MSFT"
    async with websockets.connect(wire(uri)) as websocket:
        print(f"Connected to {uri}")
        ack = decode(await websocket.recv())
        print(
            f"Subscribed: {ack['subscription_id']} {ack['symbols']} every {ack['interval_ms']} ms\n"
        )
        count = 0
        while count < updates:
            data = decode(await websocket.recv())
            if data["type"] == "data":
                count += 1
                for update in records_of(data):
                    print(
                        f"[{update['timestamp']}] {update['symbol']}: "
                        f"${update['price']:.2f} ({update['change_percent']:+.2f}%) "
                        f"[{update['provider']}] confidence {update['confidence']:.2f}"
                    )
            elif data["type"] == "heartbeat":
                print(f"Heartbeat - {data['active_subscriptions']} active subscriptions")


async def stream_with_full_control(base: str, updates: int) -> None:
    """Advanced example: two streams on one connection, each request answered by its ack."""
    print("\n=== Advanced Streaming with Full Control ===\n")
    uri = f"{base}/ws/stream"
    async with websockets.connect(wire(uri)) as websocket:
        print(f"Connected to {uri}")
        await websocket.send(
            json.dumps(
                {
                    "type": "subscribe",
                    "stream_type": "price",
                    "symbols": ["AAPL", "TSLA", "NVDA"],
                    "asset_type": "equity",
                    "market": "US",
                    "interval_ms": 2000,
                    "data_type": "price",
                }
            )
        )
        ack1 = decode(await websocket.recv())
        print(f"Equity subscription created: {ack1['subscription_id']}")
        await websocket.send(
            json.dumps(
                {
                    "type": "subscribe",
                    "stream_type": "ohlcv",
                    "symbols": ["BTC/USDT"],
                    "asset_type": "crypto",
                    "market": "CRYPTO",
                    "interval_ms": 1000,
                    "data_type": "ohlcv",
                }
            )
        )
        ack2 = decode(await websocket.recv())
        print(f"Crypto subscription created: {ack2['subscription_id']}\n")

        print("Receiving updates from multiple streams:\n")
        count = 0
        while count < updates:
            data = decode(await websocket.recv())
            if data["type"] == "data":
                count += 1
                for update in records_of(data):
                    if data["stream_type"] == "price":
                        print(
                            f"PRICE: {update['symbol']} = ${update['price']:.2f} "
                            f"({update['change_percent']:+.2f}%, change {update['change']:+.2f})"
                        )
                    else:
                        state = "closed" if update["is_closed"] else "open"
                        print(
                            f"OHLCV: {update['symbol']} {when(update['timestamp']):%H:%M} "
                            f"({state}) - O:{update['open']:.2f} H:{update['high']:.2f} "
                            f"L:{update['low']:.2f} C:{update['close']:.2f} "
                            f"V:{update['volume']:.2f}"
                        )
            elif data["type"] == "heartbeat":
                print("Heartbeat")
            elif data["type"] == "error":
                print(f"Error: {data['message']}")

        print("\nUnsubscribing from the equity stream...")
        await websocket.send(
            json.dumps({"type": "unsubscribe", "stream_type": "price", "symbols": None})
        )  # every price subscription
        # Data the server sent before it read the request may still be on its way: skip it.
        unsub_ack = decode(await websocket.recv())
        while unsub_ack["type"] == "data":
            unsub_ack = decode(await websocket.recv())
        print(f"Unsubscribed: {unsub_ack['type']} {unsub_ack['subscription_id']}")


async def stream_with_error_handling(base: str, updates: int) -> None:
    """Robust example: ``fiml_stream`` reconnects with backoff and jitter, and resumes from
    the last message received, on this gateway or another (docs/CLIENT.md)."""
    print("\n=== Streaming with Auto-Reconnection ===\n")
    client = FimlStream(base, binary=BINARY)
    prices = client.watch_prices(["AAPL", "GOOGL"], mode="conflated", interval_ms=1000)
    count = 0
    async for update in prices:
        print(f"[{update.timestamp[11:19]}] {update.symbol}: ${update.price:.2f}")
        count += 1
        if count >= updates:
            break
    await prices.aclose()
    for sub_id, stats in client.stats.items():
        print(
            f"{sub_id}: {stats.connects} connection(s), {stats.resumes} resumed, gaps {stats.gaps}"
        )


async def monitor_multiple_assets(base: str, updates: int) -> None:
    """Practical example: a portfolio's prices and day change, from two subscriptions."""
    print("\n=== Portfolio Monitoring ===\n")
    portfolio = {
        "Tech Stocks": ["AAPL", "GOOGL", "MSFT", "NVDA"],
        "Crypto": ["BTC/USDT", "ETH/USDT"],
    }
    async with websockets.connect(wire(f"{base}/ws/stream")) as websocket:
        print("Starting portfolio monitor...\n")
        for group, asset_type, market in (
            ("Tech Stocks", "equity", "US"),
            ("Crypto", "crypto", "CRYPTO"),
        ):
            await websocket.send(
                json.dumps(
                    {
                        "type": "subscribe",
                        "stream_type": "price",
                        "symbols": portfolio[group],
                        "asset_type": asset_type,
                        "market": market,
                        "interval_ms": 1000,
                        "data_type": "price",
                    }
                )
            )
            ack = decode(await websocket.recv())
            print(f"Monitoring {group.lower()}: {ack['symbols']}")
        print()
        prices: dict[str, float] = {}
        count = 0
        while count < updates:
            data = decode(await websocket.recv())
            if data["type"] != "data":
                continue
            count += 1
            for update in records_of(data):
                prices[update["symbol"]] = update["price"]
                mark = "+" if update["change_percent"] >= 0 else "-"
                volume = "" if update["volume"] is None else f" vol {update['volume']:.2f}"
                print(
                    f"{mark} {update['symbol']:10} ${update['price']:>10.2f} "
                    f"({update['change_percent']:>+6.2f}%) [{update['provider']}]{volume}"
                )
            print(f"\nTracking {len(prices)} assets\n")


EXAMPLES = {
    "1": ("Simple Price Streaming", stream_prices_simple),
    "2": ("Advanced Multi-Stream", stream_with_full_control),
    "3": ("Auto-Reconnection", stream_with_error_handling),
    "4": ("Portfolio Monitor", monitor_multiple_assets),
}


async def run(choice: str, base: str, updates: int) -> None:
    chosen = list(EXAMPLES.values()) if choice == "all" else [EXAMPLES[choice]]
    for name, example in chosen:
        print(f"\n{'=' * 60}\nRunning: {name}\n{'=' * 60}\n")
        await example(base, updates)


def main() -> None:
    parser = argparse.ArgumentParser(description="FIML Stream WebSocket streaming examples")
    parser.add_argument("--url", default=URL, help="gateway base URL (default %(default)s)")
    parser.add_argument("--example", choices=[*EXAMPLES, "all"], help="skip the menu")
    parser.add_argument("--updates", type=int, default=20, help="data messages per example")
    parser.add_argument("--binary", action="store_true", help="msgpack data frames")
    args = parser.parse_args()
    global BINARY
    BINARY = args.binary
    print("=" * 60 + "\nFIML Stream WebSocket Streaming Examples\n" + "=" * 60)
    print("\nMake sure the gateway is running: make demo\n")
    choice = args.example
    if choice is None:
        print("Available examples:")
        for key, (name, _) in EXAMPLES.items():
            print(f"  {key}. {name}")
        choice = input("\nSelect example (1-4, or 'all'): ").strip()
        if choice not in EXAMPLES and choice != "all":
            print("Invalid choice")
            return
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C ends it
        asyncio.run(run(choice, args.url.rstrip("/"), args.updates))


if __name__ == "__main__":
    main()
