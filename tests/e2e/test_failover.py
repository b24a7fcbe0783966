"""Issue 17: two gateways behind a real reverse proxy (HAProxy, from Debian's packages) and two
arbitration workers, as one service. Under a live feed, one gateway and then one worker are
killed with SIGKILL. Every client (fiml_stream through the proxy) must then have received, for
each of its symbols, exactly the prices the topic holds from its first one on: 0 lost, 0
duplicated, checked by record identity against ``fiml.prices`` read with ``read_committed``.

docs/DEPLOYMENT.md shows this deployment.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer

from agents.arbitration.core.processor import RAW
from agents.arbitration.rebuild import end_offsets, wait_caught_up
from fiml_stream import Backoff, FimlStream
from infra.topics import create_topics
from schemas.codec import encode
from schemas.records import AssetType, RawTick
from schemas.topics import topic_name
from tests.integration.arbitration_support import WorkerProcess, assigned, read_all
from tests.integration.test_gateway import until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[2]
SYMBOLS = ["BTC/USDT", "ETH/USDT", "SOL/USDT", "XRP/USDT"]
PROVIDERS = {"alpha": 1.0, "bravo": 3.0, "charlie": 6.0}  # name -> noise (bp)
TICK_EVERY_S = 0.05  # per provider and symbol: 240 ticks a second in all
SECRET = "failover test: one resume secret for both gateways"
#: Each client watches two symbols; four clients, so that both gateways have some.
CLIENT_SYMBOLS = [SYMBOLS[0:2], SYMBOLS[2:4], SYMBOLS[1:3], [SYMBOLS[3], SYMBOLS[0]]]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Child:
    """A process of ours in its own process group, logging to a file."""

    def __init__(self, name: str, args: list[str], log: Path, env: dict[str, str]) -> None:
        self.name = name
        self.log = log
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                args,
                env=env,
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()
        print(f"--- the end of {self.log.name}:\n{self.log.read_text(errors='replace')[-3000:]}")


def haproxy_config(port: int, gateways: list[int], stats_port: int) -> str:
    """What docs/DEPLOYMENT.md shows: WebSockets pass through HTTP mode (``timeout tunnel``),
    a gateway that fails its /health check twice (0.3 s apart) gets no new connection, and a
    connection refused by a dead one is sent to the other (``option redispatch``)."""
    servers = "\n".join(
        f"    server gw{i} 127.0.0.1:{p} check" for i, p in enumerate(gateways, start=1)
    )
    return f"""global
    maxconn 2000

defaults
    mode http
    timeout connect 1s
    timeout client 1h
    timeout server 1h
    timeout tunnel 1h
    retries 3
    option redispatch

frontend fiml
    bind 127.0.0.1:{port}
    default_backend gateways

listen stats
    bind 127.0.0.1:{stats_port}
    stats enable
    stats uri /stats

backend gateways
    balance roundrobin
    option httpchk GET /health
    default-server inter 300ms fall 2 rise 2
{servers}
"""


@pytest.fixture
def haproxy() -> str:
    path = shutil.which("haproxy") or "/usr/sbin/haproxy"
    if not Path(path).exists():
        pytest.fail("haproxy is not installed: run `make haproxy` (apt-get install haproxy)")
    return path


async def feed(bootstrap: str, stop: asyncio.Event) -> int:
    """Live raw ticks of every symbol from every provider until ``stop``; how many."""
    rng = random.Random(17)
    truth = dict.fromkeys(SYMBOLS, 100.0)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    sent = seq = 0
    try:
        while not stop.is_set():
            now = int(time.time() * 1000)
            for symbol in SYMBOLS:
                truth[symbol] *= 1 + rng.gauss(0, 1e-5)
                for provider, noise in PROVIDERS.items():
                    seq += 1
                    price = truth[symbol] * (1 + rng.gauss(0, noise / 1e4))
                    tick = RawTick(
                        provider=provider,
                        symbol=symbol,
                        provider_symbol=symbol.replace("/", ""),
                        asset_type=AssetType.CRYPTO,
                        price=price,
                        bid=price * 0.9999,
                        ask=price * 1.0001,
                        event_time_ms=now,
                        ingest_time_ms=now,
                        seq=seq,
                    )
                    await producer.send(topic_name("fiml.raw"), encode(tick), key=symbol.encode())
                    sent += 1
            await asyncio.sleep(TICK_EVERY_S)  # the feed's pace, not synchronisation
        await producer.flush()
    finally:
        await producer.stop()
    return sent


@contextlib.contextmanager
def children() -> Iterator[list[Child]]:
    started: list[Child] = []
    try:
        yield started
    finally:
        for child in started:
            child.stop()


async def watch(client: FimlStream, symbols: list[str], got: list[dict[str, Any]]) -> None:
    prices = client.watch("price", symbols, snapshot=False, subscription_id=",".join(symbols))
    async for record in prices:
        got.append(record)


@contextlib.asynccontextmanager
async def watching(
    url: str,
) -> AsyncIterator[tuple[list[FimlStream], list[list[dict[str, Any]]]]]:
    clients = [
        FimlStream(url, backoff=Backoff(0.05, 1.0), stale_after_s=5.0, seed=i)
        for i in range(len(CLIENT_SYMBOLS))
    ]
    received: list[list[dict[str, Any]]] = [[] for _ in clients]
    tasks = [
        asyncio.create_task(watch(c, s, r))
        for c, s, r in zip(clients, CLIENT_SYMBOLS, received, strict=True)
    ]
    try:
        yield clients, received
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_a_gateway_and_a_worker_killed_under_load_lose_and_duplicate_nothing(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path, haproxy: str
) -> None:
    await create_topics(kafka_bootstrap)
    env = dict(
        os.environ,
        KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap,
        FIML_GATEWAY_RESUME_SECRET=SECRET,
        FIML_GATEWAY_HEARTBEAT_S="1",
    )
    ports = [free_port(), free_port()]
    front = free_port()
    app_id = f"arb-{uuid.uuid4().hex[:8]}"
    workers = [
        WorkerProcess(
            kafka_bootstrap,
            app_id,
            tmp_path / f"faust-{i}",
            tmp_path / f"worker-{i}.log",
        )
        for i in (1, 2)
    ]
    config = tmp_path / "haproxy.cfg"
    stats_port = free_port()
    config.write_text(haproxy_config(front, ports, stats_port))
    stop_feed = asyncio.Event()
    with children() as started:
        for w in workers:
            w.start()
        gateways = [
            Child(
                f"gateway-{i}",
                [
                    sys.executable,
                    "-m",
                    "infra.cli",
                    "gateway",
                    "--port",
                    str(p),
                    "--log-level",
                    "warning",
                ],
                tmp_path / f"gateway-{i}.log",
                env,
            )
            for i, p in enumerate(ports, start=1)
        ]
        started += gateways
        started.append(
            Child("haproxy", [haproxy, "-db", "-f", str(config)], tmp_path / "h.log", env)
        )
        async with httpx.AsyncClient() as http:

            async def both_up() -> bool:
                """HAProxy sends new connections to both gateways (its stats, as CSV)."""
                with contextlib.suppress(httpx.HTTPError):
                    csv = (await http.get(f"http://127.0.0.1:{stats_port}/stats;csv")).text
                    rows = [line.split(",") for line in csv.splitlines()]
                    return sum(r[1].startswith("gw") and r[17] == "UP" for r in rows[1:]) == 2
                return False

            await until(both_up, "both gateways up behind the proxy", deadline=60)
        feeder = asyncio.create_task(feed(kafka_bootstrap, stop_feed))
        try:
            async with watching(f"ws://127.0.0.1:{front}") as (clients, received):

                def counts() -> list[int]:
                    """Prices so far per client and symbol."""
                    return [
                        sum(r["symbol"] == s for r in got)
                        for symbols, got in zip(CLIENT_SYMBOLS, received, strict=True)
                        for s in symbols
                    ]

                def each_gained(n: int, since: list[int]) -> bool:
                    return all(c >= m + n for c, m in zip(counts(), since, strict=True))

                start = [0] * len(counts())
                await until(lambda: each_gained(50, start), "prices to every client", 90)
                on_first = await connections(ports[0])
                gateways[0].kill()  # SIGKILL: no close frame, no goodbye
                mark = counts()
                await until(lambda: each_gained(100, mark), "prices after a gateway died", 60)
                # the worker killed owns partitions then (a rebalance gave each worker some)
                await until(
                    lambda: all(_owned(w) for w in workers), "both workers to own partitions", 60
                )
                owned = _owned(workers[0])
                workers[0].kill()
                mark = counts()
                await until(lambda: each_gained(100, mark), "prices after a worker died", 90)
                stop_feed.set()
                sent = await feeder
                # every price, once the surviving worker has applied every raw tick
                ends = await end_offsets(kafka_bootstrap, topic_prefix, (RAW,))
                await wait_caught_up(kafka_bootstrap, app_id, ends, 120, workers[1].alive)
                topic = await read_all(kafka_bootstrap, "fiml.prices")
                try:
                    await until(lambda: _caught_up(topic, received), "clients to catch up", 60)
                finally:
                    _report(topic, received, clients)
                stats = [s for c in clients for s in c.stats.values()]
        finally:
            stop_feed.set()
            with contextlib.suppress(Exception):
                await feeder
            for w in workers:
                w.stop()
    assert sent >= 2_000 and on_first >= 1 and owned  # the killed ones were doing work
    for symbols, got in zip(CLIENT_SYMBOLS, received, strict=True):
        for symbol in symbols:
            mine = [r for r in got if r["symbol"] == symbol]
            theirs = [r for r in topic if r["symbol"] == symbol]
            assert mine, symbol
            first = theirs.index(mine[0])
            assert mine == theirs[first:], f"{symbol}: lost or duplicated prices"
    assert sum(s.gaps for s in stats) == 0
    assert sum(s.resumes for s in stats) >= 1  # the clients of the killed gateway resumed


def _owned(worker: WorkerProcess) -> set[int]:
    """The raw partitions ``worker`` owns now (its last logged assignment)."""
    return (assigned(worker.output()) or [set()])[-1]


async def connections(port: int) -> int:
    async with httpx.AsyncClient() as http:
        status = (await http.get(f"http://127.0.0.1:{port}/ws/connections")).json()
    count: int = status["active_connections"]
    return count


def _caught_up(topic: list[dict[str, Any]], received: list[list[dict[str, Any]]]) -> bool:
    """Every client has received the topic's last price of each of its symbols."""
    last = {}
    for r in topic:
        last[r["symbol"]] = r
    return all(
        last[s] in got[-200:]
        for symbols, got in zip(CLIENT_SYMBOLS, received, strict=True)
        for s in symbols
        if s in last
    )


def _report(
    topic: list[dict[str, Any]], received: list[list[dict[str, Any]]], clients: list[FimlStream]
) -> None:
    """What each client has against the topic (printed: pytest shows it if the test fails)."""
    for symbols, got, client in zip(CLIENT_SYMBOLS, received, clients, strict=True):
        for symbol in symbols:
            mine = [r for r in got if r["symbol"] == symbol]
            theirs = [r for r in topic if r["symbol"] == symbol]
            first = theirs.index(mine[0]) if mine and mine[0] in theirs else -1
            print(symbols, symbol, len(mine), "of", len(theirs), "from", first, client.stats)
