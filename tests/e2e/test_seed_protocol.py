"""The FIML seed's WebSocket protocol suite, ported to a live stack: ``fiml up`` (simulator,
ingestion, arbitration, gateway) on the session broker, and a real ``websockets`` client that
reads strictly in order, as the seed's clients do: after each request, the very next message is
its answer. Every message received is validated against the committed JSON Schemas, and the
seed's example programs are run against the same stack.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect

from infra.procs import fiml_argv
from schemas.jsonschema import DEFAULT_DIR
from tests.conftest import free_port
from tests.e2e.up_stack import UpProcess, fiml_up

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
DEADLINE = 20.0
SYMBOLS = "AAPL,GOOGL,MSFT,BTC/USDT,ETH/USDT"
# The seed's provider ids, and the simulator's (the demo's providers).
PROVIDERS = {
    "yahoo_finance",
    "alpha_vantage",
    "fmp",
    "sim-alpha",
    "sim-beta",
    "sim-gamma",
    "sim-delta",
}
SEED_PRICE = {
    "symbol",
    "price",
    "change",
    "change_percent",
    "volume",
    "timestamp",
    "provider",
    "confidence",
}
SEED_OHLCV = {"symbol", "timestamp", "open", "high", "low", "close", "volume", "is_closed"}

_SCHEMAS = {
    "data": "DataMessage",
    "subscription_ack": "SubscriptionAck",
    "unsubscribe_ack": "UnsubscribeAck",
    "heartbeat": "Heartbeat",
    "error": "ErrorMessage",
    "replay_complete": "ReplayComplete",
}
_VALIDATORS = {
    kind: jsonschema.Draft202012Validator(
        orjson.loads((DEFAULT_DIR / f"{name}.schema.json").read_bytes())
    )
    for kind, name in _SCHEMAS.items()
}


@pytest.fixture(scope="module")
def stack(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpProcess]:
    """One ``fiml up`` for the module, on its own topic prefix, with a price for every symbol."""
    tmp = tmp_path_factory.mktemp("seed")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FIML_TOPIC_PREFIX", f"seed{free_port()}.")
        with fiml_up(kafka_bootstrap, free_port(), tmp, "--symbols", SYMBOLS) as up:
            up.wait_for_line("gateway ready", timeout=90)
            up.wait_for_line("first price after", timeout=120)
            for symbol in ("AAPL", "MSFT", "BTC_USDT"):  # every symbol the tests read is priced
                until_priced(up, symbol)
            yield up


def until_priced(up: UpProcess, symbol: str, deadline: float = 60) -> None:
    end = time.monotonic() + deadline
    while httpx.get(f"{up.gateway_url}/prices/{symbol}", timeout=5).status_code != 200:
        assert time.monotonic() < end, f"no price of {symbol} within {deadline} s"
        time.sleep(0.2)  # polling a condition with a deadline


@pytest.fixture
async def ws(stack: UpProcess) -> AsyncIterator[ClientConnection]:
    async with connect(ws_url(stack, "/ws/stream")) as client:
        yield client


def ws_url(up: UpProcess, path: str) -> str:
    return up.gateway_url.replace("http://", "ws://") + path


async def next_message(ws: ClientConnection) -> dict[str, Any]:
    """The very next message, checked against its JSON Schema (a seed client reads in order)."""
    message: dict[str, Any] = orjson.loads(await asyncio.wait_for(ws.recv(), DEADLINE))
    _VALIDATORS[message["type"]].validate(message)
    # the seed's clients parse every timestamp this way
    datetime.fromisoformat(message["timestamp"].replace("Z", "+00:00"))
    return message


async def request(ws: ClientConnection, **message: Any) -> dict[str, Any]:
    """Send one request and read its answer: the next message, whatever it is."""
    await ws.send(orjson.dumps(message).decode())
    return await next_message(ws)


def seed_subscribe(stream_type: str, symbols: list[str], **extra: Any) -> dict[str, Any]:
    asset = "crypto" if "/" in symbols[0] else "equity"
    return {
        "type": "subscribe",
        "stream_type": stream_type,
        "symbols": symbols,
        "asset_type": asset,
        "market": "CRYPTO" if asset == "crypto" else "US",
        "interval_ms": 1000,
        "data_type": stream_type,
        **extra,
    }


# --- connection ----------------------------------------------------------------------------


async def test_connect_and_disconnect(stack: UpProcess) -> None:
    async with connect(ws_url(stack, "/ws/stream")) as client:
        await client.ping()
        assert connections(stack)["active_connections"] >= 1
    end = time.monotonic() + DEADLINE
    while connections(stack)["active_connections"]:  # the server notices the close
        assert time.monotonic() < end, "the connection is still counted after it closed"
        await asyncio.sleep(0.1)


def connections(up: UpProcess) -> dict[str, Any]:
    status: dict[str, Any] = httpx.get(f"{up.gateway_url}/ws/connections", timeout=5).json()
    return status


async def test_two_connections_at_once(stack: UpProcess) -> None:
    async with (
        connect(ws_url(stack, "/ws/stream")) as one,
        connect(ws_url(stack, "/ws/stream")) as two,
    ):
        acks = [await request(c, **seed_subscribe("price", ["AAPL"])) for c in (one, two)]
        assert [a["type"] for a in acks] == ["subscription_ack"] * 2
        assert acks[0]["subscription_id"] != acks[1]["subscription_id"]
        assert connections(stack)["active_connections"] >= 2


async def test_heartbeat_carries_active_subscriptions(
    stack: UpProcess, kafka_bootstrap: str, tmp_path: Path
) -> None:
    # A second gateway on the same topics with a 1 s heartbeat (the stack's is the seed's 30 s).
    port = free_port()
    env = {"FIML_GATEWAY_HEARTBEAT_S": "1", "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap}
    async with gateway_process(port, env) as url, connect(f"{url}/ws/stream") as client:
        ack = await request(
            client, **seed_subscribe("price", ["MSFT"], interval_ms=60_000, snapshot=False)
        )
        assert ack["type"] == "subscription_ack"
        beat = await next_message(client)
        assert beat["type"] == "heartbeat" and beat["active_subscriptions"] == 1


# --- subscriptions -------------------------------------------------------------------------


async def test_subscribe_to_price_stream(ws: ClientConnection) -> None:
    ack = await request(ws, **seed_subscribe("price", ["AAPL", "GOOGL"]))
    assert ack["type"] == "subscription_ack" and ack["stream_type"] == "price"
    assert set(ack["symbols"]) == {"AAPL", "GOOGL"} and ack["subscription_id"]
    assert ack["interval_ms"] == 1000


async def test_subscribe_to_ohlcv_stream(ws: ClientConnection) -> None:
    ack = await request(ws, **seed_subscribe("ohlcv", ["BTC/USDT"], interval_ms=5000))
    assert ack["type"] == "subscription_ack" and ack["stream_type"] == "ohlcv"


async def test_two_streams_on_one_connection_and_each_request_reads_its_ack(
    ws: ClientConnection,
) -> None:
    # AAPL has a price already: its snapshot must not come between the two acks.
    price = await request(ws, **seed_subscribe("price", ["AAPL"]))
    ohlcv = await request(ws, **seed_subscribe("ohlcv", ["MSFT"], interval_ms=5000))
    assert (price["type"], ohlcv["type"]) == ("subscription_ack", "subscription_ack")
    assert price["subscription_id"] != ohlcv["subscription_id"]
    first = await next_message(ws)  # the first data: AAPL's snapshot, at the first interval
    assert first["type"] == "data" and first["subscription_id"] == price["subscription_id"]


async def test_unsubscribe_in_the_seed_form(ws: ClientConnection) -> None:
    ack = await request(ws, **seed_subscribe("price", ["AAPL", "GOOGL"]))
    assert ack["type"] == "subscription_ack"
    unsub = await request(ws, type="unsubscribe", stream_type="price", symbols=["AAPL", "GOOGL"])
    assert unsub["type"] == "unsubscribe_ack"
    assert unsub["subscription_id"] == ack["subscription_id"]


async def test_unsubscribe_all_of_a_stream_type_and_by_id(ws: ClientConnection) -> None:
    one = await request(ws, **seed_subscribe("price", ["AAPL"]))
    two = await request(ws, **seed_subscribe("ohlcv", ["BTC/USDT"]))
    unsub = await request(ws, type="unsubscribe", stream_type="price", symbols=None)
    assert unsub["type"] == "unsubscribe_ack" and unsub["subscription_id"] == one["subscription_id"]
    by_id = await request(ws, type="unsubscribe", subscription_id=two["subscription_id"])
    assert by_id == {**by_id, "type": "unsubscribe_ack", "subscription_id": two["subscription_id"]}
    again = await request(ws, type="unsubscribe", subscription_id=two["subscription_id"])
    assert again["type"] == "error" and again["error_code"] == "UNKNOWN_SUBSCRIPTION"


async def test_invalid_subscription_request(ws: ClientConnection) -> None:
    error = await request(ws, type="subscribe", stream_type="price")  # no symbols
    assert error["type"] == "error" and error["error_code"] == "SUBSCRIPTION_ERROR"
    assert (await request(ws, **seed_subscribe("price", ["AAPL"])))["type"] == "subscription_ack"


async def test_five_subscriptions_on_one_connection(ws: ClientConnection) -> None:
    for i in range(5):
        ack = await request(ws, **seed_subscribe("price", [f"TEST{i}"]))
        assert ack["type"] == "subscription_ack" and ack["symbols"] == [f"TEST{i}"]


async def test_a_100_ms_interval(ws: ClientConnection) -> None:
    ack = await request(ws, **seed_subscribe("price", ["BTC/USDT"], interval_ms=100))
    assert ack["type"] == "subscription_ack" and ack["interval_ms"] == 100
    for _ in range(3):
        data = await next_message(ws)
        assert data["type"] == "data" and data["data"][0]["symbol"] == "BTC/USDT"


# --- data ----------------------------------------------------------------------------------


async def test_price_updates_carry_the_seed_keys(ws: ClientConnection) -> None:
    ack = await request(ws, **seed_subscribe("price", ["AAPL", "MSFT"], interval_ms=500))
    assert ack["type"] == "subscription_ack"
    seen = 0
    while seen < 5:
        message = await next_message(ws)
        if message["type"] != "data":
            continue
        assert message["stream_type"] == "price"
        assert message["subscription_id"] == ack["subscription_id"]
        assert message["metadata"] == {} and isinstance(message["timestamp_ms"], int)
        for update in message["data"]:
            assert set(update) >= SEED_PRICE
            assert (
                update["provider"] in PROVIDERS and update["provider"] in update["providers_used"]
            )
            assert 0 <= update["confidence"] <= 1
            sent = datetime.fromisoformat(update["timestamp"].replace("Z", "+00:00"))
            assert round(sent.timestamp() * 1000) == update["event_time_ms"]
        seen += 1


async def test_change_is_against_the_open_of_the_days_candle(ws: ClientConnection) -> None:
    """Every figure a seed client prints is right: change, change_percent and volume are those
    of the symbol's 1d candle, which the client can read on the same connection."""
    await request(ws, **seed_subscribe("ohlcv", ["BTC/USDT"], params={"interval": "1d"}))
    await request(ws, **seed_subscribe("price", ["BTC/USDT"]))
    day: dict[str, Any] | None = None
    checked = 0
    while checked < 3:
        message = await next_message(ws)
        if message["type"] != "data":
            continue
        for item in message["data"]:
            if message["stream_type"] == "ohlcv":
                assert set(item) >= SEED_OHLCV and item["is_closed"] == item["is_final"]
                day = item
            elif day is not None and item["timestamp"][:10] == day["timestamp"][:10]:
                assert item["day_open"] == day["open"]
                assert item["change"] == item["price"] - day["open"]
                assert item["change_percent"] == item["change"] / day["open"] * 100
                checked += 1


async def test_the_prices_shortcut(stack: UpProcess) -> None:
    async with connect(ws_url(stack, "/ws/prices/AAPL,MSFT")) as client:
        ack = await next_message(client)
        assert ack["type"] == "subscription_ack" and set(ack["symbols"]) == {"AAPL", "MSFT"}
        data = await next_message(client)  # the snapshot, at the first interval
        assert data["type"] == "data"
        assert {u["symbol"] for u in data["data"]} <= {"AAPL", "MSFT"}


# --- errors and status ---------------------------------------------------------------------


async def test_invalid_json(ws: ClientConnection) -> None:
    await ws.send("not valid json {")
    error = await next_message(ws)
    assert error["type"] == "error" and error["error_code"] == "INVALID_JSON"


async def test_unknown_message_type(ws: ClientConnection) -> None:
    error = await request(ws, type="UNKNOWN_TYPE", data="test")
    assert error["type"] == "error" and error["error_code"] == "INVALID_MESSAGE_TYPE"


async def test_51_symbols_are_refused(ws: ClientConnection) -> None:
    error = await request(ws, **seed_subscribe("price", [f"SYM{i}" for i in range(51)]))
    assert error["type"] == "error" and error["error_code"] == "SUBSCRIPTION_ERROR"
    assert error["field"] == "symbols"


async def test_connections_status(stack: UpProcess, ws: ClientConnection) -> None:
    await request(ws, **seed_subscribe("price", ["AAPL", "MSFT"]))
    status = connections(stack)
    assert status["active_connections"] >= 1 and status["total_subscriptions"] >= 1
    assert {"AAPL", "MSFT"} <= set(status["subscribed_symbols"])


# --- the seed's example programs -----------------------------------------------------------


@pytest.mark.parametrize("example", ["1", "2", "3", "4"])
def test_streaming_example_runs_and_exits_cleanly(stack: UpProcess, example: str) -> None:
    out = run_example(
        "websocket_streaming.py", "--url", ws_url(stack, ""), "--example", example, "--updates", "3"
    )
    assert "Running:" in out and "$" in out, out


def test_streaming_example_menu_all(stack: UpProcess) -> None:
    out = run_example(
        "websocket_streaming.py", "--url", ws_url(stack, ""), "--updates", "2", stdin="all\n"
    )
    assert out.count("Running:") == 4, out
    assert "Unsubscribed: unsubscribe_ack" in out, out


def test_minimal_demo_runs_and_exits_cleanly(stack: UpProcess) -> None:
    out = run_example("websocket_demo.py", ws_url(stack, ""), "--updates", "3")
    assert "Update #3" in out and "Demo completed successfully!" in out, out
    assert "Provider: " in out, out


def run_example(name: str, *args: str, stdin: str = "") -> str:
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / name), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stdout + done.stderr
    return done.stdout


@contextlib.asynccontextmanager
async def gateway_process(port: int, env: dict[str, str]) -> AsyncIterator[str]:
    """``fiml gateway`` on ``port`` with ``env`` added; stopped and waited for on exit."""
    proc = subprocess.Popen(
        fiml_argv("gateway", "--host", "127.0.0.1", "--port", str(port)),
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        async with httpx.AsyncClient(timeout=2) as client:
            while True:
                assert proc.poll() is None, "the gateway exited"
                with contextlib.suppress(httpx.HTTPError):
                    r = await client.get(f"http://127.0.0.1:{port}/health")
                    if r.json().get("status") == "ok":
                        break
                assert loop.time() < deadline, "the gateway did not become ready in 60 s"
                await asyncio.sleep(0.2)
        yield f"ws://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
