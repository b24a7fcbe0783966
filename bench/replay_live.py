"""Live latency while replays run: what many replays at once cost the gateway's live clients.

    python -m bench.replay_live --replays 4 --rate 500 --phase 6 --rounds 2

One gateway serves both. Live: PriceUpdate records written straight to ``fiml.prices`` at
``--rate`` a second (no worker: the figure is the broker's and the gateway's part), stamped
with the wall clock at send; ``--clients`` clients in this process subscribe to every live
symbol in realtime mode and take ``arrival - event_time_ms`` for each record. Replays: a child
process runs ``--replays`` clients, each replaying the same 200,000 retained records of other
symbols over and over in msgpack frames, unpacking them only to count their records (a
client's decoding is its own CPU, not the gateway's). Quiet and replaying phases alternate,
``--rounds`` of each, in one run; the figure is the live p99 in each kind of phase and their
ratio. The replays' share of the
gateway is ``FIML_GATEWAY_REPLAY_LOOP_SHARE`` (gateway/budget.py); per-replay records a second
show whether they shared it fairly.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time

import orjson
import ormsgpack
import websockets

from bench.common import (
    MACHINE_NOTE,
    fiml,
    free_port,
    fresh_prefix,
    kafka,
    report,
    spawn,
    stop,
    wait_http,
)
from bench.latency import percentile
from bench.replay import fill, replay_request

HISTORY = 200_000


async def live_feed(
    bootstrap: str, topic: str, symbols: list[str], rate: int, until: float
) -> None:
    from aiokafka import AIOKafkaProducer

    from schemas.codec import encode
    from schemas.records import AssetType, PriceUpdate

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=1, acks=1)
    await producer.start()
    try:
        sent, slot = 0, 0.01
        next_at = time.time()
        while time.time() < until:
            for _ in range(max(1, round(rate * slot))):
                symbol = symbols[sent % len(symbols)]
                now = int(time.time() * 1000)
                record = PriceUpdate(
                    symbol=symbol,
                    asset_type=AssetType.EQUITY,
                    price=100.0,
                    confidence=0.9,
                    band_low=99.9,
                    band_high=100.1,
                    providers_used=["a"],
                    event_time_ms=now,
                    source_ticks=1,
                    provider="a",
                    day_open=100.0,
                )
                await producer.send(topic, encode(record), key=symbol.encode())
                sent += 1
            next_at += slot
            await asyncio.sleep(max(0.0, next_at - time.time()))  # pacing
    finally:
        await producer.stop()


async def live_client(url: str, symbols: list[str], samples: list[tuple[float, float]]) -> None:
    """Append (arrival time, latency ms) for every record until cancelled."""
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
        while True:
            message = orjson.loads(await ws.recv())
            if message.get("type") == "data":
                now = time.time()
                for record in message["data"]:
                    samples.append((now, now * 1000 - record["event_time_ms"]))


async def live(
    bootstrap: str, url: str, rate: int, clients: int, phases: list[tuple[str, float, float]]
) -> dict[str, list[float]]:
    """Run the live feed and clients through ``phases`` (name, start, end); latencies by phase
    name."""
    from schemas.topics import topic_name

    symbols = [f"LIVE{i}" for i in range(10)]
    samples: list[tuple[float, float]] = []
    tasks = [asyncio.create_task(live_client(url, symbols, samples)) for _ in range(clients)]
    await asyncio.sleep(1.0)  # let them subscribe (not a sync point: early records are skipped)
    try:
        await live_feed(bootstrap, topic_name("fiml.prices"), symbols, rate, phases[-1][2])
        await asyncio.sleep(1.0)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    out: dict[str, list[float]] = {}
    for name, start, end in phases:
        out.setdefault(name, []).extend(lat for at, lat in samples if start + 0.5 <= at < end)
    return out


async def replay_load(
    url: str, start_ms: int, end_ms: int, replays: int, begin: float, until: float
) -> None:
    """``replays`` clients replaying ``[start_ms, end_ms)`` from ``begin`` until ``until``;
    prints the records each received a second. The process starts and connects before
    ``begin``, so that its start-up is not counted against the live clients."""
    symbols = [f"R{chr(65 + i // 26)}{chr(65 + i % 26)}" for i in range(10)]

    async def one() -> float:
        async with websockets.connect(url + "?format=msgpack", max_size=None) as ws:
            await asyncio.sleep(max(0.0, begin - time.time()))  # the phase's start
            records, began = 0, time.perf_counter()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(until - time.time()):
                    while True:  # replay after replay, until the phase ends
                        request = replay_request(
                            symbols, start_ms, end_ms, subscription_id="replay"
                        )
                        await ws.send(request)
                        while True:
                            raw = await ws.recv()
                            if isinstance(raw, bytes):  # a data message: count its records
                                records += ormsgpack.unpackb(raw)["count"]
                            elif '"replay_complete"' in raw:
                                unsubscribe = {"type": "unsubscribe", "subscription_id": "replay"}
                                await ws.send(orjson.dumps(unsubscribe))
                                break
        return records / (time.perf_counter() - began)

    rates = await asyncio.gather(*(one() for _ in range(replays)))
    print(json.dumps(rates))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replays", type=int, default=4)
    parser.add_argument("--rate", type=int, default=500, help="live records a second")
    parser.add_argument("--clients", type=int, default=10, help="live clients")
    parser.add_argument("--phase", type=float, default=6.0, help="seconds per phase")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--load", nargs=6, help=argparse.SUPPRESS)  # the replay child
    args = parser.parse_args()
    if args.load:
        url, start, end, replays, begin, until = args.load
        asyncio.run(
            replay_load(url, int(start), int(end), int(replays), float(begin), float(until))
        )
        return
    start_ms = int(time.time() * 1000) - 3_600_000
    end_ms = start_ms + HISTORY * 10
    with kafka() as bootstrap:
        from schemas.topics import topic_name

        prefix = fresh_prefix(bootstrap)
        history = [f"R{chr(65 + i // 26)}{chr(65 + i % 26)}" for i in range(10)]
        asyncio.run(fill(bootstrap, topic_name("fiml.prices"), history, HISTORY, start_ms))
        port = free_port()
        env = dict(os.environ, KAFKA_BOOTSTRAP_SERVERS=bootstrap, FIML_TOPIC_PREFIX=prefix)
        gateway = spawn(fiml("gateway", "--port", str(port), "--no-deflate"), env)
        url = f"ws://127.0.0.1:{port}/ws/stream"
        loads: list[subprocess.Popen[bytes]] = []
        try:
            wait_http(f"http://127.0.0.1:{port}/health")
            t = time.time() + 2.0
            phases = []
            for _ in range(args.rounds):
                phases.append(("quiet", t, t + args.phase))
                phases.append(("replaying", t + args.phase, t + 2 * args.phase))
                t += 2 * args.phase
            for _name, begin, end in phases[1::2]:
                child = [
                    sys.executable,
                    "-m",
                    "bench.replay_live",
                    "--load",
                    url,
                    str(start_ms),
                    str(end_ms),
                    str(args.replays),
                    str(begin),
                    str(end),
                ]
                loads.append(subprocess.Popen(child, stdout=subprocess.PIPE, env=env))
            latencies = asyncio.run(live(bootstrap, url, args.rate, args.clients, phases))
            per_replay = [r for p in loads for r in json.loads(p.communicate(timeout=120)[0])]
        finally:
            for p in loads:
                p.kill()
            stop(gateway)
    quiet = sorted(latencies["quiet"])
    busy = sorted(latencies["replaying"])
    p99_quiet, p99_busy = percentile(quiet, 0.99), percentile(busy, 0.99)
    report(
        "replay_live",
        {
            "live_p99_ms_quiet": p99_quiet,
            "live_p99_ms_replaying": p99_busy,
            "live_p99_rise": p99_busy / p99_quiet - 1,
            "live_p50_ms_quiet": percentile(quiet, 0.5),
            "live_p50_ms_replaying": percentile(busy, 0.5),
            "replays_records_per_s": sum(per_replay) / args.rounds,
            "replay_fairness_min_over_max": min(per_replay) / max(per_replay),
        },
        replays=args.replays,
        per_replay_records_per_s=per_replay,
        note=MACHINE_NOTE,
    )


if __name__ == "__main__":
    main()
