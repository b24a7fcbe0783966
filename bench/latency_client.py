"""Latency clients: N WebSocket clients in one process, realtime price subscriptions.

Each data item's latency is the arrival time minus its ``event_time_ms`` (the producer stamps
ticks with the wall clock when it sends them). Samples taken between --start and --end (epoch
seconds) are written as a JSON list of milliseconds to --out.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

import orjson
import websockets


async def client(url: str, symbols: list[str], start: float, end: float, out: list[float]) -> None:
    async with websockets.connect(url, max_size=None, compression=None) as ws:
        await ws.send(
            orjson.dumps(
                {
                    "type": "subscribe",
                    "stream_type": "price",
                    "symbols": symbols,
                    "mode": "realtime",
                    "snapshot": False,
                }
            )
        )
        while time.time() < end:
            try:
                raw = await asyncio.wait_for(ws.recv(), timeout=max(0.1, end - time.time()))
            except TimeoutError:
                break
            now_ms = time.time() * 1000
            message = orjson.loads(raw)
            if message.get("type") != "data" or now_ms < start * 1000:
                continue
            out.extend(now_ms - item["event_time_ms"] for item in message["data"])


async def run_clients(args: argparse.Namespace) -> list[float]:
    symbols = args.symbols.split(",")
    samples: list[float] = []
    tasks = []
    for i in range(args.offset, args.offset + args.clients):
        chosen = [symbols[(i * args.per_client + k) % len(symbols)] for k in range(args.per_client)]
        tasks.append(client(args.url, chosen, args.start, args.end, samples))
    await asyncio.gather(*tasks)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--symbols", required=True, help="comma-separated, one group per client")
    parser.add_argument("--per-client", type=int, default=1)
    parser.add_argument("--clients", type=int, required=True)
    parser.add_argument("--offset", type=int, default=0, help="first client's index")
    parser.add_argument("--start", type=float, required=True)
    parser.add_argument("--end", type=float, required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    Path(args.out).write_text(json.dumps(asyncio.run(run_clients(args))))


if __name__ == "__main__":
    main()
