#!/usr/bin/env python3
"""Quick WebSocket demo: five price updates from a running gateway (``make demo``).

The FIML seed's minimal client, unchanged in what it reads: the subscription ack, then data
messages whose items carry ``symbol``, ``price``, ``change_percent`` and ``provider``
(docs/WEBSOCKET.md, "Data items").

    python examples/websocket_demo.py [ws://localhost:8000] [--updates 5] [--binary]
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

import ormsgpack
import websockets

from fiml_stream import records_of

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


async def quick_demo(base: str, updates: int) -> None:
    uri = f"{base}/ws/prices/AAPL,MSFT"
    print(f"Connecting to {uri}...")
    try:
        async with websockets.connect(wire(uri)) as websocket:
            print("Connected!\n")
            # The first message is the subscription's acknowledgment.
            ack = decode(await websocket.recv())
            print("Subscription acknowledged:")
            print(f"   Subscription ID: {ack['subscription_id']}")
            print(f"   Symbols: {', '.join(ack['symbols'])}")
            print(f"   Update interval: {ack['interval_ms']} ms\n")

            print(f"Streaming data (receiving {updates} updates)...")
            print("-" * 60)
            count = 0
            while count < updates:
                data = decode(await websocket.recv())
                if data["type"] == "data":
                    count += 1
                    print(f"\nUpdate #{count}:")
                    for update in records_of(data):
                        print(
                            f"   {update['symbol']:6} | "
                            f"Price: ${update['price']:>10.2f} | "
                            f"Change: {update['change_percent']:>+6.2f}% | "
                            f"Provider: {update['provider']}"
                        )
                elif data["type"] == "heartbeat":
                    print("   Heartbeat received")
                elif data["type"] == "error":
                    print(f"   Error: {data['message']}")
                    break
            print("\n" + "-" * 60)
            print("Demo completed successfully!")
    except OSError:
        print("Connection refused. Is the gateway running? Start it with: make demo")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", nargs="?", default="ws://localhost:8000", help="gateway base URL")
    parser.add_argument("--updates", type=int, default=5, help="data messages to read")
    parser.add_argument("--binary", action="store_true", help="msgpack data frames")
    args = parser.parse_args()
    global BINARY
    BINARY = args.binary
    asyncio.run(quick_demo(args.url.rstrip("/"), args.updates))


if __name__ == "__main__":
    main()
