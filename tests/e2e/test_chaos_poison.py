"""Chaos (c): poison beside live data. Hypothesis generates bad records (malformed JSON, wrong
types, huge, subnormal and non-finite numbers, unicode, missing fields, event times a year old
and a day ahead, for new and existing symbols) and produces them to every topic a component
reads, while ``fiml up`` runs the simulator: no process crashes or restarts, each bad record is
skipped or dead-lettered and counted, and a WebSocket client keeps receiving fresh prices.
Fixed seed (``derandomize``), so a failure reproduces."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaProducer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import connect

from schemas.topics import topic_name
from tests.conftest import free_port
from tests.e2e.up_stack import UpProcess, fiml_up

pytestmark = pytest.mark.e2e

NOW_MS = int(time.time() * 1000)
YEAR_MS = 365 * 86_400_000
METRICS: dict[str, int] = {}  # the stack's ingestion metrics port; arbitration's is the next
READ_TOPICS = ("fiml.raw", "fiml.prices", "fiml.quotes", "fiml.trades", "fiml.ohlcv")

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)
times = st.sampled_from([NOW_MS - YEAR_MS, NOW_MS + 86_400_000, NOW_MS, 0, 2**62, -1])
numbers = st.sampled_from([5e-324, 1.7976931348623157e308, 0.0, -1.0, 1e-300, 65_000.0])
symbols = st.sampled_from(["BTC/USDT", "ETH/USDT", "NEW/COIN", "ÜNICODE/€", "", "btc/usdt"])


@st.composite
def record_like(draw: st.DrawFn) -> bytes:
    """A raw tick or a derived record with some fields wrong, missing or extreme."""
    base: dict[str, Any] = {
        "v": 2,
        "provider": "chaos",
        "symbol": draw(symbols),
        "provider_symbol": "X",
        "asset_type": draw(st.sampled_from(["crypto", "equity", "nope"])),
        "price": draw(numbers),
        "bid": draw(numbers),
        "ask": draw(numbers),
        "event_time_ms": draw(times),
        "ingest_time_ms": NOW_MS,
        "seq": 1,
        "trade_id": "t",
        "amount": draw(numbers),
        "interval": draw(json_values),
        "confidence": draw(numbers),
        "timestamp": draw(json_values),
    }
    for key in draw(st.lists(st.sampled_from(sorted(base)), max_size=4, unique=True)):
        if draw(st.booleans()):
            del base[key]
        else:
            base[key] = draw(json_values)
    return orjson.dumps(base)


poison = st.one_of(
    st.binary(max_size=80),
    json_values.map(orjson.dumps),
    record_like(),
    st.sampled_from([b'{"price": NaN}', b'{"price": Infinity}', b"\x00" * 10, b"[" * 500]),
)


@pytest.fixture(scope="module")
def stack(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpProcess]:
    tmp = tmp_path_factory.mktemp("chaos")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FIML_TOPIC_PREFIX", f"chaos{free_port()}.")
        METRICS["port"] = free_port()
        with fiml_up(
            kafka_bootstrap,
            free_port(),
            tmp,
            "--symbols",
            "BTC/USDT,ETH/USDT",
            "--metrics-port",
            str(METRICS["port"]),
        ) as up:
            up.wait_for_line("first price after", timeout=120)
            up.known |= up.descendants()
            yield up


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def fresh_price(url: str, after_ms: int) -> dict[str, Any]:
    """The first BTC/USDT price a client receives whose event time is after ``after_ms``."""
    async with connect(url.replace("http://", "ws://") + "/ws/stream") as ws:
        await ws.send(
            orjson.dumps(
                {
                    "type": "subscribe",
                    "stream_type": "price",
                    "symbols": ["BTC/USDT"],
                    "mode": "realtime",
                }
            ).decode()
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            message = orjson.loads(await asyncio.wait_for(ws.recv(), 30))
            for item in message.get("data", []) if message["type"] == "data" else []:
                if item["event_time_ms"] > after_ms:
                    return dict(item)
    raise AssertionError("no fresh price within 30 s")


@settings(
    max_examples=15,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(batch=st.lists(st.tuples(st.sampled_from(READ_TOPICS), poison), min_size=5, max_size=20))
def test_poison_on_every_topic_beside_live_data(
    stack: UpProcess, kafka_bootstrap: str, batch: list[tuple[str, bytes]]
) -> None:
    children = {pid: rss_kib(pid) for pid in stack.known}
    asyncio.run(_produce(kafka_bootstrap, batch))
    price = asyncio.run(fresh_price(stack.gateway_url, int(time.time() * 1000)))
    assert price["symbol"] == "BTC/USDT" and price["price"] > 0
    assert not [line for line in stack.seen if " exited" in line], "\n".join(stack.seen)
    health = httpx.get(f"{stack.gateway_url}/health", timeout=5).json()
    assert health["status"] == "ok", health
    for pid, before in children.items():  # alive, and no runaway memory (it once took 6 GB)
        assert Path(f"/proc/{pid}").exists(), f"process {pid} is gone"
        assert rss_kib(pid) - before < 200_000, f"process {pid} grew by over 200 MB"


async def _produce(bootstrap: str, batch: list[tuple[str, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        for logical, value in batch:
            await producer.send(topic_name(logical), value, key=b"BTC/USDT")
        await producer.flush()
    finally:
        await producer.stop()


def test_the_poison_was_counted(stack: UpProcess) -> None:
    """Runs after the property above: what it produced was skipped and counted."""
    gateway = httpx.get(f"{stack.gateway_url}/metrics", timeout=5).text
    skipped = next(
        float(line.split()[-1])
        for line in gateway.splitlines()
        if line.startswith("fiml_gateway_decode_errors_total")
    )
    assert skipped > 0
    worker = httpx.get(f"http://127.0.0.1:{METRICS['port'] + 1}/metrics", timeout=5).text
    dead = next(
        float(line.split()[-1])
        for line in worker.splitlines()
        if line.startswith("fiml_arbitration_dead_letters_total")
    )
    assert dead > 0
