"""Fan-out: updates per second the gateway delivers to 100 and 1,000 WebSocket clients, against a
bare uvicorn broadcast loop, and server memory per idle connection.

    KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092 python -m bench.fanout [--quick]

* **Gateway**: one ``fiml gateway`` process (uvicorn, the real broker, a fresh topic prefix) fed
  by a producer process writing ``PriceUpdate`` records (``--rate`` a second over ``--symbols``
  symbols) to ``fiml.prices``. N clients, in ``--procs`` client processes of N/procs asyncio
  ``websockets`` clients each, subscribe to every symbol in real-time mode. A data message may
  carry several updates, so we count both.
* **Bare loop** (the limit): a tiny ASGI app under the same uvicorn sends one encoded
  ``PriceUpdate`` at a time to every connected client, as fast as it can, to the same client
  processes.
* **Idle memory**: RSS of a fresh gateway process before and after 1,000 clients connect (each
  with one subscription to a symbol that gets no data), divided by 1,000; once with the clients
  asking for per-message deflate, once without.

Clients count a record by its ``"event_time_ms"`` key (each record has one, a data message's
envelope none), without parsing, so the clients cost as little CPU as they can. Rates are
counted by every client over the same ``--duration`` seconds after a warm-up, summed. Per-message
deflate is off for the throughput runs (each client chooses). This is a script, not a test: the
numbers depend on the machine; the last stdout line is the JSON that ``bench/run.py`` collects.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import (
    LOAD_GATEWAY_ENV,
    MACHINE_NOTE,
    ROOT,
    fiml,
    free_port,
    fresh_prefix,
    kafka,
    report,
    spawn,
    stop,
    wait_http,
)

SYMBOL = "FAN{}/USD"
IDLE_CONNECTIONS = 1_000


def sample_record(symbol: str, value: float) -> bytes:
    from schemas.codec import encode
    from schemas.records import AssetType, PriceUpdate

    return encode(
        PriceUpdate(
            symbol=symbol,
            asset_type=AssetType.CRYPTO,
            price=value,
            confidence=0.93,
            band_low=value * 0.999,
            band_high=value * 1.001,
            providers_used=["sim-a", "sim-b"],
            event_time_ms=time.time_ns() // 1_000_000,
            source_ticks=2,
            provider="sim-a",
            day_open=100.0,
        )
    )


# --- roles run in child processes -----------------------------------------------------------


async def producer_role(bootstrap: str, rate: int, symbols: int) -> None:
    """Write ``rate`` PriceUpdate records a second, round-robin over the symbols, until killed."""
    from aiokafka import AIOKafkaProducer

    from schemas.topics import topic_name

    topic = topic_name("fiml.prices")
    names = [SYMBOL.format(i) for i in range(symbols)]
    # Encoded once: the producer spends its CPU on sending, not on pydantic, so that its rate
    # is not what caps 100 clients (the measured offered rate is reported either way).
    records = [(name.encode(), sample_record(name, 100.0 + v)) for v in range(50) for name in names]
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=5, acks=1, max_batch_size=512 * 1024
    )
    await producer.start()
    try:
        tick = 0.01
        per_tick = max(1, round(rate * tick))
        n = 0
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            for _ in range(per_tick):
                key, value = records[n % len(records)]
                await producer.send(topic, value, key=key)
                n += 1
            next_at += tick
            await asyncio.sleep(max(0.0, next_at - loop.time()))  # pacing the producer
    finally:
        await producer.stop()


def bare_app() -> Any:
    """The baseline: an ASGI app broadcasting one small JSON message at a time, forever."""
    payload = sample_record("FAN0/USD", 100.0).decode()
    clients: set[Any] = set()
    state: dict[str, asyncio.Task[None] | None] = {"task": None}

    async def broadcast() -> None:
        while True:
            if not clients:
                await asyncio.sleep(0.05)
                continue
            for send in list(clients):
                try:
                    await send({"type": "websocket.send", "text": payload})
                except Exception:  # the client went away
                    clients.discard(send)
            await asyncio.sleep(0)  # let the server accept and read

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    state["task"] = asyncio.create_task(broadcast())
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    if state["task"] is not None:
                        state["task"].cancel()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] == "http":  # readiness probe
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})
            return
        if scope["type"] != "websocket":
            return
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        clients.add(send)
        try:
            while (await receive())["type"] != "websocket.disconnect":
                pass
        finally:
            clients.discard(send)

    return app


async def clients_role(url: str, count: int, subscribe: str | None, deflate: bool) -> None:
    """Open ``count`` connections, print READY, then on each stdin line ``measure D`` count
    messages and records for D seconds and print them as JSON; exit at EOF."""
    import websockets

    counts = [0, 0]
    measuring = False

    async def open_one() -> Any:
        ws = await websockets.connect(
            url,
            compression="deflate" if deflate else None,
            max_size=None,
            ping_interval=None,
            open_timeout=120,
        )
        if subscribe is not None:
            await ws.send(subscribe)
        return ws

    async def read(ws: Any) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            while True:
                raw = await ws.recv(decode=False)
                if measuring:
                    counts[0] += 1
                    counts[1] += raw.count(b'"event_time_ms"')

    conns: list[Any] = []
    for start in range(0, count, 50):
        conns += await asyncio.gather(*(open_one() for _ in range(min(50, count - start))))
    readers = [asyncio.create_task(read(ws)) for ws in conns]
    print("READY", len(conns), flush=True)
    loop = asyncio.get_running_loop()
    while line := await loop.run_in_executor(None, sys.stdin.readline):
        duration = float(line.split()[1])
        counts[:] = [0, 0]
        measuring = True
        await asyncio.sleep(duration)  # the measurement window
        measuring = False
        print(json.dumps({"messages": counts[0], "updates": counts[1]}), flush=True)
    for task in readers:
        task.cancel()
    await asyncio.gather(*(ws.close() for ws in conns), return_exceptions=True)


# --- the orchestrator -----------------------------------------------------------------------


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


class ClientGroup:
    """``procs`` client processes holding ``total`` connections between them."""

    def __init__(
        self,
        url: str,
        total: int,
        procs: int,
        env: dict[str, str],
        subscribe: str | None = None,
        deflate: bool = False,
    ) -> None:
        import subprocess

        share = [total // procs + (i < total % procs) for i in range(procs)]
        self.procs = []
        for n in share:
            args = [
                sys.executable,
                "-m",
                "bench.fanout",
                "--role",
                "clients",
                "--url",
                url,
                "--count",
                str(n),
            ]
            if subscribe is not None:
                args += ["--subscribe", subscribe]
            if deflate:
                args.append("--deflate")
            self.procs.append(
                subprocess.Popen(
                    args,
                    env=env,
                    cwd=ROOT,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                    start_new_session=True,
                )
            )

    def ready(self) -> int:
        total = 0
        for proc in self.procs:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            if not line.startswith("READY"):
                raise RuntimeError(f"client process failed: {line!r}")
            total += int(line.split()[1])
        return total

    def measure(self, seconds: float) -> tuple[int, int]:
        for proc in self.procs:
            assert proc.stdin is not None
            proc.stdin.write(f"measure {seconds}\n")
            proc.stdin.flush()
        messages = updates = 0
        for proc in self.procs:
            assert proc.stdout is not None
            result = json.loads(proc.stdout.readline())
            messages += result["messages"]
            updates += result["updates"]
        return messages, updates

    def close(self) -> None:
        for proc in self.procs:
            with contextlib.suppress(OSError):
                assert proc.stdin is not None
                proc.stdin.close()
        stop(*self.procs)  # type: ignore[arg-type]


def gateway_process(env: dict[str, str], port: int, log: Path) -> Any:
    proc = spawn(fiml("gateway", "--port", str(port), "--log-level", "warning"), env, log)
    try:
        wait_http(f"http://127.0.0.1:{port}/health")
    except BaseException:
        stop(proc)
        raise
    return proc


def records_consumed(port: int) -> float:
    """The gateway's ``fiml_gateway_records_consumed_total`` for ``fiml.prices``."""
    import httpx

    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    for line in text.splitlines():
        if line.startswith('fiml_gateway_records_consumed_total{topic="fiml.prices"}'):
            return float(line.split()[-1])
    return 0.0


def throughput(
    url: str,
    clients: int,
    procs: int,
    env: dict[str, str],
    subscribe: str | None,
    warmup: float,
    duration: float,
    port: int | None = None,
) -> tuple[float, float, float]:
    """Messages/s and updates/s delivered (summed over clients), and records/s the gateway read
    from Kafka in the same window (0 for the bare loop; ``port``: the gateway's HTTP port)."""
    group = ClientGroup(url, clients, procs, env, subscribe)
    try:
        connected = group.ready()
        if connected != clients:
            raise RuntimeError(f"only {connected} of {clients} clients connected")
        group.measure(warmup)
        before = records_consumed(port) if port else 0.0
        messages, updates = group.measure(duration)
        after = records_consumed(port) if port else 0.0
    finally:
        group.close()
    return messages / duration, updates / duration, (after - before) / duration


def idle_kib(env: dict[str, str], procs: int, deflate: bool, log: Path) -> float:
    port = free_port()
    gateway = gateway_process(env, port, log)
    url = f"ws://127.0.0.1:{port}/ws/stream"
    subscribe = json.dumps(
        {"type": "subscribe", "stream_type": "price", "symbols": ["IDLE/USD"], "snapshot": False}
    )
    try:
        warm = ClientGroup(url, 10, 1, env, subscribe, deflate)  # first-use allocations
        warm.ready()
        warm.close()
        before = rss_kib(gateway.pid)
        group = ClientGroup(url, IDLE_CONNECTIONS, procs, env, subscribe, deflate)
        try:
            if group.ready() != IDLE_CONNECTIONS:
                raise RuntimeError("not every idle client connected")
            group.measure(1.0)  # let the acks go out and the server settle
            after = rss_kib(gateway.pid)
        finally:
            group.close()
    finally:
        stop(gateway)
    return (after - before) / IDLE_CONNECTIONS


def orchestrate(args: argparse.Namespace) -> None:
    sizes = [100, 1000]
    warmup, duration = (1.0, 3.0) if args.quick else (3.0, 15.0)
    t0 = time.monotonic()
    metrics: dict[str, float] = {}
    log = Path(os.environ.get("TMPDIR", "/tmp")) / f"fiml-bench-fanout-{os.getpid()}.log"
    with kafka() as bootstrap:
        fresh_prefix(bootstrap)
        env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "PYTHONPATH": str(ROOT),
            **LOAD_GATEWAY_ENV,
        }
        for deflate in (False, True):
            key = "idle_kib_per_conn_deflate" if deflate else "idle_kib_per_conn_plain"
            metrics[key] = round(idle_kib(env, args.procs, deflate, log), 2)
            print(f"{key}: {metrics[key]} [{time.monotonic() - t0:.0f} s]", file=sys.stderr)

        port = free_port()
        gateway = gateway_process(env, port, log)
        producer = spawn(
            [
                sys.executable,
                "-m",
                "bench.fanout",
                "--role",
                "producer",
                "--rate",
                str(args.rate),
                "--symbols",
                str(args.symbols),
            ],
            env,
            log,
        )
        subscribe = json.dumps(
            {
                "type": "subscribe",
                "stream_type": "price",
                "mode": "realtime",
                "snapshot": False,
                "symbols": [SYMBOL.format(i) for i in range(args.symbols)],
            }
        )
        try:
            for n in sizes:
                msgs, updates, read = throughput(
                    f"ws://127.0.0.1:{port}/ws/stream",
                    n,
                    args.procs,
                    env,
                    subscribe,
                    warmup,
                    duration,
                    port,
                )
                offered = read * n  # every client subscribes to every symbol
                metrics[f"fanout_{n}_msgs_per_s"] = round(msgs)
                metrics[f"fanout_{n}_updates_per_s"] = round(updates)
                metrics[f"fanout_{n}_offered_per_s"] = round(offered)
                ratio = round(updates / offered, 3) if offered else 0.0
                metrics[f"fanout_{n}_delivered_ratio"] = ratio
                print(
                    f"gateway, {n} clients: {updates:,.0f} updates/s in {msgs:,.0f} msgs/s "
                    f"({read:,.0f} records/s read, {updates / max(offered, 1):.1%} of "
                    f"{offered:,.0f} offered) [{time.monotonic() - t0:.0f} s]",
                    file=sys.stderr,
                )
        finally:
            stop(producer, gateway)

        port = free_port()
        bare = spawn(
            [sys.executable, "-m", "bench.fanout", "--role", "bare", "--port", str(port)], env, log
        )
        try:
            wait_http(f"http://127.0.0.1:{port}/")
            for n in sizes:
                msgs, _, _ = throughput(
                    f"ws://127.0.0.1:{port}/", n, args.procs, env, None, warmup, duration
                )
                metrics[f"bare_{n}_msgs_per_s"] = round(msgs)
                print(
                    f"bare loop, {n} clients: {msgs:,.0f} msgs/s [{time.monotonic() - t0:.0f} s]",
                    file=sys.stderr,
                )
        finally:
            stop(bare)
    report(
        "fanout",
        metrics,
        machine=MACHINE_NOTE,
        quick=args.quick,
        rate=args.rate,
        symbols=args.symbols,
        client_processes=args.procs,
        duration_s=duration,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a ~60 s run (shorter windows)")
    parser.add_argument(
        "--rate", type=int, default=10_000, help="records/s the producer tries to write"
    )
    parser.add_argument("--symbols", type=int, default=10)
    parser.add_argument("--procs", type=int, default=4, help="client processes")
    parser.add_argument(
        "--role", default="orchestrate", choices=["orchestrate", "producer", "bare", "clients"]
    )
    parser.add_argument("--url")
    parser.add_argument("--count", type=int, default=0)
    parser.add_argument("--subscribe")
    parser.add_argument("--deflate", action="store_true")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    if args.role == "orchestrate":
        orchestrate(args)
    elif args.role == "producer":
        asyncio.run(producer_role(os.environ["KAFKA_BOOTSTRAP_SERVERS"], args.rate, args.symbols))
    elif args.role == "bare":
        import uvicorn

        uvicorn.run(
            bare_app(),
            host="127.0.0.1",
            port=args.port,
            log_level="warning",
            ws_per_message_deflate=True,
            lifespan="on",
        )
    else:
        asyncio.run(clients_role(args.url, args.count, args.subscribe, args.deflate))


if __name__ == "__main__":
    main()
