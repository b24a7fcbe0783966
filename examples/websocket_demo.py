"""Minimal client: stream arbitrated prices from a running gateway (``fiml gateway``)."""

from __future__ import annotations

import asyncio
import json
import sys

import websockets


async def main(symbols: str = "BTC_USDT,ETH_USDT") -> None:
    async with websockets.connect(f"ws://127.0.0.1:8000/ws/prices/{symbols}") as ws:
        async for raw in ws:
            message = json.loads(raw)
            if message["type"] == "data":
                for update in message["data"]:
                    print(f"{update['symbol']}: {update['price']} "
                          f"(confidence {update['confidence']:.2f})")
            elif message["type"] == "error":
                print("error:", message["message"])


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:2]))
