"""``make soak``: the demo pipeline under load for ten minutes, with 1,000 WebSocket clients.

Runs simulator ingestion (``--rate`` times the demo's tick rate), one arbitration worker and one
gateway on the real broker, and ``--clients`` clients in ``--procs`` processes, each subscribed
in real time to one symbol. Every ``--window`` seconds it samples each process's RSS and the
clients' latency (arrival time minus the price's ``event_time_ms``), then prints a table per
window and each process's RSS growth from the first window after ``--warmup`` to the last (the
goal: under 5 %). The last line of stdout is the JSON report (``bench/common.py``).

    python -m bench.soak --duration 600 --clients 1000        # make soak
    python -m bench.soak --duration 90 --clients 200           # a quick look
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import (
    LOAD_GATEWAY_ENV,
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

SYMBOLS = "AAPL,GOOGL,MSFT,TSLA,NVDA,BTC/USDT,ETH/USDT"


def rss_kib(pid: int) -> int:
    """Resident memory of ``pid`` (each piece is one process)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


# --- the client processes --------------------------------------------------------------------


async def _client(
    url: str, symbol: str, until: float, window: float, t0: float, buckets: dict[int, list[float]]
) -> None:
    import orjson
    import websockets

    async with websockets.connect(url, max_size=None, compression=None) as ws:
        await ws.send(
            orjson.dumps(
                {
                    "type": "subscribe",
                    "stream_type": "price",
                    "symbols": [symbol],
                    "mode": "realtime",
                    "snapshot": False,
                }
            ).decode()
        )
        while time.time() < until:
            try:
                raw = await asyncio.wait_for(ws.recv(), timeout=max(0.1, until - time.time()))
            except TimeoutError:
                break
            now = time.time()
            message = orjson.loads(raw)
            if message.get("type") != "data":
                continue
            bucket = buckets.setdefault(int((now - t0) // window), [])
            bucket.extend(now * 1000 - item["event_time_ms"] for item in message["data"])


async def _clients(args: argparse.Namespace) -> None:
    symbols = SYMBOLS.split(",")
    buckets: dict[int, list[float]] = {}
    await asyncio.gather(
        *(
            _client(args.url, symbols[i % len(symbols)], args.until, args.window, args.t0, buckets)
            for i in range(args.offset, args.offset + args.clients)
        ),
        return_exceptions=True,
    )
    Path(args.out).write_text(  # noqa: ASYNC240 - once, at the end, after every client
        json.dumps({str(k): v for k, v in buckets.items()})
    )


def client_main() -> None:
    parser = argparse.ArgumentParser()
    for name, kind in (
        ("url", str),
        ("out", str),
        ("clients", int),
        ("offset", int),
        ("until", float),
        ("window", float),
        ("t0", float),
    ):
        parser.add_argument(f"--{name}", type=kind, required=True)
    asyncio.run(_clients(parser.parse_args()))


# --- the soak --------------------------------------------------------------------------------


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=600.0)
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--procs", type=int, default=4)
    parser.add_argument("--rate", type=float, default=10.0, help="simulator rate multiplier")
    parser.add_argument("--window", type=float, default=30.0)
    parser.add_argument("--warmup", type=float, default=60.0)
    args = parser.parse_args()
    work = Path(os.environ.get("FIML_SOAK_DIR", "/tmp/fiml-soak"))
    work.mkdir(parents=True, exist_ok=True)
    with kafka() as bootstrap:
        fresh_prefix(bootstrap)
        env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "FIML_ARB_DATADIR": str(work / f"arb-{os.getpid()}"),
            "PYTHONUNBUFFERED": "1",
            **LOAD_GATEWAY_ENV,
        }
        port = free_port()
        pieces = {
            "ingest": spawn(
                fiml(
                    "ingest",
                    "-p",
                    "sim",
                    "--symbols",
                    SYMBOLS,
                    "--rate",
                    str(args.rate),
                    "--bootstrap",
                    bootstrap,
                    "--quiet",
                ),
                env,
                work / "ingest.log",
            ),
            "arbitrate": spawn(fiml("arbitrate"), env, work / "arbitrate.log"),
            "gateway": spawn(
                fiml("gateway", "--port", str(port), "--log-level", "warning"),
                env,
                work / "gateway.log",
            ),
        }
        clients: list[Any] = []
        try:
            wait_http(f"http://127.0.0.1:{port}/health", 90)
            t0 = time.time()
            until = t0 + args.duration
            per = args.clients // args.procs
            for i in range(args.procs):
                clients.append(
                    spawn(
                        [
                            sys.executable,
                            "-c",
                            "from bench.soak import client_main; client_main()",
                            "--url",
                            f"ws://127.0.0.1:{port}/ws/stream",
                            "--out",
                            str(work / f"lat-{i}.json"),
                            "--clients",
                            str(per),
                            "--offset",
                            str(i * per),
                            "--until",
                            str(until),
                            "--window",
                            str(args.window),
                            "--t0",
                            str(t0),
                        ],
                        env,
                    )
                )
            rss: dict[int, dict[str, int]] = {}
            window = 0
            while time.time() < until:
                # the RSS at the end of each window (the clients bucket by arrival time)
                time.sleep(max(0.0, min(t0 + (window + 1) * args.window, until) - time.time()))
                rss[window] = {name: rss_kib(p.pid) for name, p in pieces.items()}
                print(
                    f"[soak] {time.time() - t0:5.0f} s  rss MiB: "
                    + "  ".join(f"{k} {v / 1024:.0f}" for k, v in rss[window].items()),
                    flush=True,
                )
                window += 1
            for c in clients:
                c.wait(timeout=120)
        finally:
            stop(*clients, *pieces.values())
    latencies: dict[int, list[float]] = {}
    for i in range(args.procs):
        path = work / f"lat-{i}.json"
        if path.exists():
            for k, values in json.loads(path.read_text()).items():
                latencies.setdefault(int(k), []).extend(values)
    print(
        f"\nsoak: {args.clients} clients, simulator x{args.rate}, {args.duration:.0f} s; "
        f"{MACHINE_NOTE}\n"
    )
    print(
        "| window (s) | updates | p50 ms | p99 ms | "
        + " | ".join(f"{n} RSS MiB" for n in pieces)
        + " |"
    )
    print("|---" * (4 + len(pieces)) + "|")
    for w in sorted(set(latencies) | set(rss)):
        values = latencies.get(w, [])
        row = rss.get(w, {})
        print(
            f"| {w * args.window:.0f}-{(w + 1) * args.window:.0f} | {len(values):,} | "
            f"{_percentile(values, 0.5):.0f} | {_percentile(values, 0.99):.0f} | "
            + " | ".join(f"{row.get(n, 0) / 1024:.0f}" for n in pieces)
            + " |"
        )
    first = min((w for w in rss if w * args.window >= args.warmup), default=None)
    last = max(rss, default=None)
    growth: dict[str, float] = {}
    if first is not None and last is not None and first != last:
        for name in pieces:
            before, after = rss[first][name], rss[last][name]
            growth[f"{name}_rss_growth_pct"] = round(100 * (after - before) / max(before, 1), 1)
    print("\nRSS growth after warm-up: " + ", ".join(f"{k} {v:+.1f} %" for k, v in growth.items()))
    everything = [v for values in latencies.values() for v in values]
    report(
        "soak",
        {**growth, "updates": len(everything), "p99_ms": round(_percentile(everything, 0.99), 1)},
    )


if __name__ == "__main__":
    main()
