"""Fuzzing a live gateway: over 10,000 generated client messages a run.

Hypothesis draws protocol messages (every type, any field values including huge integers and
times, unknown keys) and byte-level garbage; each goes to a live gateway, followed by a
sentinel (an unsubscribe of an id no fuzz message uses, which must come back as
UNKNOWN_SUBSCRIPTION naming it), so that every fuzz message is seen to be answered before the
next. Then the hostile frames: oversized text, a deflate bomb, binary frames, a flood of
fragments. Throughout, a bystander client's subscription keeps receiving its data; afterwards
the gateway holds no connection, subscription or task of the fuzzers, and its hub is up.
The gateway is a ``fiml gateway`` process, so its memory is its own: its RSS after the run
is compared with before (a leak per message would show over 10,000). Fixed seed
(``derandomize``), so a failure reproduces.
"""

# The fixtures are imported from the sibling module, so test parameters "redefine" them.
# ruff: noqa: F811

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaProducer
from hypothesis import HealthCheck, given
from hypothesis import settings as run_settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from infra.procs import fiml_argv
from tests.conftest import free_port
from tests.integration.test_gateway import T0, Feed, price, topics  # noqa: F401

pytestmark = pytest.mark.integration

REPLIES = {"subscription_ack", "unsubscribe_ack", "error", "welcome"}
EXAMPLES = 2_600  # x 4 messages each (the batch below): over 10,000 fuzz messages a run

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=8,
)
symbols = st.sampled_from(["BTC/USDT", "ETH/USDT", "AAPL", "BTC_USDT", "", "NOPE/X", "€/¥"])
field_values: dict[str, st.SearchStrategy[Any]] = {
    "type": st.sampled_from(["subscribe", "unsubscribe", "hello", "auth", "nope", ""]),
    "stream_type": st.sampled_from(["price", "ohlcv", "quote", "trades", "multi_asset", "x"]),
    "symbols": st.lists(symbols, max_size=60) | json_values,
    "interval_ms": st.sampled_from([0, 99, 100, 60_000, 60_001, 2**63, -1]) | json_values,
    "replay_from": st.sampled_from([0, T0, 2**63, 2**64, -5, "2026-01-01T00:00:00Z", "x"]),
    "replay_to": st.sampled_from([T0 + 1, 2**64, 0, None]),
    "replay_speed": st.sampled_from([0, 1e-9, 1.0, 1e300, -1]) | json_values,
    "subscription_id": st.text(max_size=140) | json_values,
    "resume_from": st.sampled_from([0, 1, 2**53, 2**64, -1]) | json_values,
    "resume_token": st.text(max_size=80) | json_values,
    "token": st.text(max_size=100) | st.sampled_from(["fiml_a_b", "e30.e30.", "x" * 5000]),
    "mode": st.sampled_from(["conflated", "realtime", "fast"]),
    "snapshot": json_values,
    "params": st.fixed_dictionaries({}, optional={"interval": json_values, "source": json_values})
    | json_values,
}
messages = st.fixed_dictionaries({}, optional=field_values)  # any subset of the fields
frames = (
    messages.map(json.dumps)  # json: integers past 64 bits too
    | st.binary(max_size=200).map(lambda b: b.decode("latin-1"))
    | st.text(max_size=200)
    | json_values.map(json.dumps)
)


class Fuzzer:
    """One client connection at a time (a new one when the gateway closed the last)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.ws: ClientConnection | None = None
        self.sent = 0
        self.closed: dict[int | None, int] = {}
        self.sentinels = 0
        self._stack = contextlib.ExitStack()  # the current connection

    def close(self) -> None:
        self._stack.close()
        self.ws = None

    def answered(self, frame: str) -> None:
        """Send ``frame`` and a sentinel; at least one reply must come before the sentinel's
        error. A connection closed by the gateway must be closed with a typed code."""
        if self.ws is None:
            self.ws = self._stack.enter_context(
                connect(self.url, max_size=None, ping_interval=None)  # pings draw from random
            )
        ws = self.ws
        self.sentinels += 1
        sentinel = f"sentinel-{self.sentinels}"
        try:
            ws.send(frame)
            ws.send(orjson.dumps({"type": "unsubscribe", "subscription_id": sentinel}).decode())
            replies = 0
            while True:
                message = orjson.loads(ws.recv(timeout=10))
                if message.get("subscription_id") == sentinel:
                    assert message["error_code"] == "UNKNOWN_SUBSCRIPTION", message
                    break
                replies += message["type"] in REPLIES
            assert replies >= 1, frame[:200]
        except ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd is not None else None
            assert code in (1009, 4001, 4008, 4029), (code, frame[:200])
            self.closed[code] = self.closed.get(code, 0) + 1
            self.close()
        self.sent += 1


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def send_price(bootstrap: str, value: float) -> None:
    async def produce() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
        await producer.start()
        try:
            await Feed(producer).send("fiml.prices", price("DOGE/USDT", value, T0))
        finally:
            await producer.stop()

    asyncio.run(produce())


def bystander_sees(bystander: ClientConnection, bootstrap: str, value: float) -> None:
    """A client subscribed before the fuzzing receives a price published now."""
    send_price(bootstrap, value)
    end = time.monotonic() + 30
    while time.monotonic() < end:
        message = orjson.loads(bystander.recv(timeout=30))
        if message["type"] == "data" and message["data"][-1]["price"] == value:
            return
    raise AssertionError(f"the bystander never saw {value}")


@pytest.fixture
def gateway_process(kafka_bootstrap: str, topics: str, tmp_path: Path) -> Iterator[str]:
    """``fiml gateway`` on a free port; yields ``host:port``."""
    port = free_port()
    env = dict(
        os.environ,
        # the fuzzer sends as fast as it can: the rate limit has its own test
        FIML_GATEWAY_MAX_MESSAGES_PER_S="1000000000",
        FIML_GATEWAY_MAX_SUBSCRIPTIONS="5",
    )
    log = (tmp_path / "gateway.log").open("wb")
    proc = subprocess.Popen(
        fiml_argv(
            "gateway", "--port", str(port), "--bootstrap", kafka_bootstrap, "--log-level", "warning"
        ),
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        end = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).json()["status"] == "ok":
                    break
            except (httpx.HTTPError, ValueError):
                pass
            assert proc.poll() is None and time.monotonic() < end, "the gateway did not start"
            time.sleep(0.2)
        yield f"127.0.0.1:{port}|{proc.pid}"
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def test_ten_thousand_generated_messages_are_each_answered(
    gateway_process: str, kafka_bootstrap: str
) -> None:
    address, pid = gateway_process.split("|")
    url = f"ws://{address}/ws/stream"
    with connect(url, ping_interval=None) as bystander:
        bystander.send(
            orjson.dumps(
                {
                    "type": "subscribe",
                    "stream_type": "price",
                    "symbols": ["DOGE/USDT"],
                    "interval_ms": 100,
                    "subscription_id": "watch",
                }
            ).decode()
        )
        assert orjson.loads(bystander.recv(timeout=10))["type"] == "subscription_ack"
        bystander_sees(bystander, kafka_bootstrap, 1.0)
        fuzzer = Fuzzer(url)
        for _ in range(300):  # warm up: the first connections' allocations are not a leak
            fuzzer.answered('{"type": "hello"}')
        before = rss_kib(int(pid))

        @run_settings(
            max_examples=EXAMPLES,
            derandomize=True,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        @given(batch=st.lists(frames, min_size=4, max_size=4))
        def run(batch: list[str]) -> None:
            for frame in batch:
                fuzzer.answered(frame)

        run()
        assert fuzzer.sent >= 10_000 + 300
        bystander_sees(bystander, kafka_bootstrap, 2.0)  # still served after the flood
        hostile_frames(url)
        bystander_sees(bystander, kafka_bootstrap, 3.0)
        fuzzer.close()
        grown = rss_kib(int(pid)) - before
        # flat: a leak of even 1 KiB a message would be 10 MB here
        assert grown < 8 * 1024, f"the gateway grew by {grown} KiB over {fuzzer.sent} messages"
    end = time.monotonic() + 20
    while True:  # every fuzz connection and subscription gone, the hub up
        status = httpx.get(f"http://{address}/ws/connections", timeout=5).json()
        health = httpx.get(f"http://{address}/health", timeout=5).json()
        if status["active_connections"] == 0 and status["total_subscriptions"] == 0:
            break
        assert time.monotonic() < end, status
        time.sleep(0.2)
    assert health["status"] == "ok"


def hostile_frames(url: str) -> None:
    """Oversized, compressed-bomb, binary and fragmented frames: closed with 1009 or answered;
    never a crash."""
    big = "x" * (64 * 1024 + 1)
    with connect(url, compression=None) as ws:
        ws.send(big)
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
    # a deflate bomb: a few KiB on the wire, 10 MiB once inflated (max_size counts inflated)
    bomb = '{"type": "hello", "pad": "' + "0" * (10 * 1024 * 1024) + '"}'
    assert len(zlib.compress(bomb.encode())) < 64 * 1024
    with connect(url) as ws:  # negotiates permessage-deflate
        ws.send(bomb)
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
    with connect(url) as ws:
        ws.send(b"\x00\xff binary garbage")
        assert orjson.loads(ws.recv(timeout=10))["error_code"] == "INVALID_JSON"
        ws.send(orjson.dumps({"type": "hello"}))  # a binary frame holding JSON
        assert orjson.loads(ws.recv(timeout=10))["type"] == "welcome"
        # a flood of fragments of one message: reassembled within the size limit, answered
        ws.send(iter(['{"type": ', '"hello"', *([" "] * 5_000), "}"]))
        assert orjson.loads(ws.recv(timeout=10))["type"] == "welcome"
