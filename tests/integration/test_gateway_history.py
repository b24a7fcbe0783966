"""Resume after reconnect and replay of a recorded range, against a real broker."""

# The fixtures are imported from the sibling module, so test parameters "redefine" them.
# ruff: noqa: F811

from __future__ import annotations

import os
from dataclasses import replace
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect

from gateway import GatewaySettings
from tests.integration.test_gateway import (  # noqa: F401
    HOUR,
    T0,
    Feed,
    candle,
    feed,
    gw,
    http_get,
    is_type,
    price,
    recv_until,
    running_gateway,
    settings,
    subscribe,
    tick,
    topics,
    wait_cached,
)

pytestmark = pytest.mark.integration


async def collect_prices(ws: ClientConnection, want: int) -> list[dict[str, Any]]:
    """Data messages until ``want`` records have arrived."""
    messages: list[dict[str, Any]] = []
    while sum(len(m["data"]) for m in messages) < want:
        messages.append(await recv_until(ws, is_type("data")))
    return messages


#: The subscription the resume tests start, then resume.
RESUMABLE: dict[str, Any] = {
    "stream_type": "price",
    "symbols": ["ADA/USDT"],
    "mode": "realtime",
    "subscription_id": "resume-me",
}


async def resume(ws: ClientConnection, last: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """Resume ``RESUMABLE`` from data message ``last`` (its seq and resume token)."""
    request = {**RESUMABLE, "resume_from": last["seq"], "resume_token": last["resume_token"]}
    return await subscribe(ws, **{**request, **fields})


async def test_resume_on_another_gateway_after_a_restart_fills_the_gap_exactly(
    settings: GatewaySettings, feed: Feed
) -> None:
    """Issue 17: the resume token of the last message received resumes on any gateway that
    shares the secret, after any restart: here the first gateway is gone for good, and the
    second started after it stopped. Exactly the records missed, seq continuous, then live."""
    async with running_gateway(settings) as first, connect(f"ws://{first}/ws/stream") as ws:
        ack = await subscribe(ws, **RESUMABLE, snapshot=False)
        assert ack["subscription_id"] == "resume-me" and ack["resume_token"]
        await feed.send("fiml.prices", *[price("ADA/USDT", float(i), T0 + i) for i in range(1, 6)])
        seen = await collect_prices(ws, 5)
    assert all(m["resume_token"] for m in seen)
    last = seen[-1]
    # Missed while no gateway ran: 6..10 (and a BTC record that must not leak in).
    await feed.send("fiml.prices", *[price("ADA/USDT", float(i), T0 + i) for i in range(6, 11)])
    await feed.send("fiml.prices", price("BTC/USDT", 1.0, T0))
    async with running_gateway(settings) as second:
        await wait_cached(second, "BTC_USDT", 1.0)  # its hub has read past the gap
        async with connect(f"ws://{second}/ws/stream") as ws:
            ack = await resume(ws, last)
            assert ack["type"] == "subscription_ack" and ack["resumed_from"] == last["seq"]
            caught_up = await collect_prices(ws, 5)
            assert [m["seq"] for m in caught_up] == list(
                range(last["seq"] + 1, last["seq"] + 1 + len(caught_up))
            )
            assert [d["price"] for m in caught_up for d in m["data"]] == [6.0, 7.0, 8.0, 9.0, 10.0]
            await feed.send("fiml.prices", price("ADA/USDT", 11.0, T0 + 11))
            live = await recv_until(ws, is_type("data"))
            assert live["seq"] == caught_up[-1]["seq"] + 1 and live["data"][0]["price"] == 11.0
            # resuming again while it is active is refused plainly
            again = await resume(ws, live)
            assert (
                again["error_code"] == "RESUME_UNAVAILABLE" and "still active" in again["message"]
            )
        # the newest token resumes too, from where that message left off: nothing more
        async with connect(f"ws://{second}/ws/stream") as ws:
            ack = await resume(ws, live)
            assert ack["type"] == "subscription_ack" and ack["resumed_from"] == live["seq"]
            await feed.send("fiml.prices", price("ADA/USDT", 12.0, T0 + 12))
            after = await recv_until(ws, is_type("data"))
            assert after["seq"] == live["seq"] + 1 and after["data"][0]["price"] == 12.0


async def test_a_resume_token_serves_only_its_subscription(gw: str, feed: Feed) -> None:
    """The id alone resumes nothing (another client may use the same id), and a token is
    bound to its subscription: other symbols, another id, an altered position, a seq that is
    not the token's, or a gateway with another secret are each refused with a reason."""
    async with connect(f"ws://{gw}/ws/stream") as ws:
        await subscribe(ws, **RESUMABLE, snapshot=False)
        await feed.send("fiml.prices", price("ADA/USDT", 1.0, T0))
        last = (await collect_prices(ws, 1))[-1]
    body, _, mac = last["resume_token"].rpartition(".")
    version, epoch, seq, offsets = body.split(".")
    moved = "-".join(str(int(o) - 1) for o in offsets.split("-"))
    refusals: dict[str, dict[str, Any]] = {
        "guessed": {"resume_token": "guessed"},
        "other symbols": {"symbols": ["BTC/USDT"]},
        "other id": {"subscription_id": "someone-else"},
        "altered offsets": {"resume_token": f"{version}.{epoch}.{seq}.{moved}.{mac}"},
        "other seq": {"resume_from": last["seq"] + 1},
    }
    async with connect(f"ws://{gw}/ws/stream") as ws:
        for case, fields in refusals.items():
            refused = await resume(ws, last, **fields)
            assert refused["type"] == "error", case
            assert refused["error_code"] == "RESUME_UNAVAILABLE", case
            assert refused["field"] == "resume_token", case
        ack = await resume(ws, last)  # and the connection still serves the right one
        assert ack["type"] == "subscription_ack"


async def test_a_gateway_with_another_secret_refuses_the_token(
    settings: GatewaySettings, gw: str, feed: Feed
) -> None:
    async with connect(f"ws://{gw}/ws/stream") as ws:
        await subscribe(ws, **RESUMABLE, snapshot=False)
        await feed.send("fiml.prices", price("ADA/USDT", 1.0, T0))
        last = (await collect_prices(ws, 1))[-1]
    other = replace(settings, resume_secret="another secret, 32 bytes or more!")
    async with running_gateway(other) as stranger, connect(f"ws://{stranger}/ws/stream") as ws:
        refused = await resume(ws, last)
        assert refused["error_code"] == "RESUME_UNAVAILABLE"
        assert "not this subscription's" in refused["message"]


async def test_replay_of_a_recorded_hour_returns_exactly_its_records(gw: str, feed: Feed) -> None:
    inside = [price("DOT/USDT", 1.0 + i, T0 + i * 60_000) for i in range(60)]
    before = [price("DOT/USDT", 0.5, T0 - 1)]
    after = [price("DOT/USDT", 99.0, T0 + HOUR)]
    other = [price("BTC/USDT", 2.0, T0 + 5)]
    await feed.send("fiml.prices", *before, *inside, *after, *other)
    async with connect(f"ws://{gw}/ws/stream") as ws:
        ack = await subscribe(
            ws, stream_type="price", symbols=["DOT/USDT"], replay_from=T0, replay_to=T0 + HOUR
        )
        assert ack["replay"] is True
        got: list[dict[str, Any]] = []
        while True:
            message = await recv_until(ws, lambda m: m["type"] in ("data", "replay_complete"))
            if message["type"] == "replay_complete":
                break
            got.extend(message["data"])
        assert message["records"] == 60
    assert got == [orjson.loads(r.model_dump_json()) for r in inside]


async def test_replay_filters_on_event_time_not_publication_time(gw: str, feed: Feed) -> None:
    # Published 5 s after the event, as the pipeline's producers do (Kafka timestamp = send time).
    inside = [price("UNI/USDT", 1.0 + i, T0 + i * 60_000) for i in range(5)]
    for record in inside:
        await feed.send_at("fiml.prices", record.event_time_ms + 5_000, record)
    # Published inside the hour, but its event is before it: not part of the hour.
    await feed.send_at("fiml.prices", T0 + 400_000, price("UNI/USDT", 50.0, T0 - 1))
    # Its event is in the last millisecond of the hour, published just after it (within the
    # margin): part of the hour.
    last = price("UNI/USDT", 60.0, T0 + HOUR - 1)
    await feed.send_at("fiml.prices", T0 + HOUR + 2_000, last)
    async with connect(f"ws://{gw}/ws/stream") as ws:
        await subscribe(
            ws, stream_type="price", symbols=["UNI/USDT"], replay_from=T0, replay_to=T0 + HOUR
        )
        got: list[float] = []
        while True:
            message = await recv_until(ws, lambda m: m["type"] in ("data", "replay_complete"))
            if message["type"] == "replay_complete":
                break
            got.extend(d["price"] for d in message["data"])
    assert got == [1.0, 2.0, 3.0, 4.0, 5.0, 60.0] and message["records"] == 6


async def delete_everything(bootstrap: str, logical: str) -> None:
    """What retention does, made deterministic: every record now on the topic is deleted."""
    from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete

    from agents.arbitration.rebuild import end_offsets

    ends = await end_offsets(bootstrap, os.environ.get("FIML_TOPIC_PREFIX", ""), (logical,))
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.delete_records({tp: RecordsToDelete(end) for tp, end in ends.items() if end})
    finally:
        await admin.close()


async def test_replay_from_before_the_retained_history_is_refused_plainly(
    gw: str, feed: Feed, kafka_bootstrap: str
) -> None:
    await feed.send(
        "fiml.prices", *[price("AVAX/USDT", 1.0 + i, T0 + i * 60_000) for i in range(5)]
    )
    await delete_everything(kafka_bootstrap, "fiml.prices")
    kept_from = T0 + 600_000
    await feed.send(
        "fiml.prices", *[price("AVAX/USDT", 10.0 + i, kept_from + i * 60_000) for i in range(3)]
    )
    async with connect(f"ws://{gw}/ws/stream") as ws:
        # Not an empty replay that looks complete: the start of the range is gone.
        await subscribe(
            ws,
            stream_type="price",
            symbols=["AVAX/USDT"],
            replay_from=T0,
            replay_to=T0 + HOUR,
            subscription_id="gone",
        )
        refused = await recv_until(ws, is_type("error"))
        assert refused["error_code"] == "REPLAY_ERROR" and refused["field"] == "replay_from"
        assert f"({kept_from})" in refused["message"] and "retention" in refused["message"]
        # From where the message says history starts, the replay is whole.
        await subscribe(
            ws,
            stream_type="price",
            symbols=["AVAX/USDT"],
            replay_from=kept_from,
            replay_to=T0 + HOUR,
            subscription_id="kept",
        )
        got: list[float] = []
        while (m := await recv_until(ws, lambda m: m["type"] in ("data", "replay_complete")))[
            "type"
        ] == "data":
            got.extend(d["price"] for d in m["data"])
        assert got == [10.0, 11.0, 12.0] and m["records"] == 3


async def test_candles_over_deleted_history_say_from_when_they_are_whole(
    gw: str, feed: Feed, kafka_bootstrap: str
) -> None:
    await feed.send(
        "fiml.ohlcv", *[candle("NEAR/USDT", T0 + i * 60_000, 5.0 + i, final=True) for i in range(3)]
    )
    await delete_everything(kafka_bootstrap, "fiml.ohlcv")
    kept_from = T0 + 600_000
    await feed.send(
        "fiml.ohlcv",
        *[candle("NEAR/USDT", kept_from + i * 60_000, 10.0 + i, final=True) for i in range(2)],
    )
    r = await http_get(gw, f"/ohlcv/NEAR_USDT?interval=1m&start={T0}&end={T0 + HOUR}")
    assert r.status_code == 200, r.text
    assert [c["close"] for c in r.json()["candles"]] == [10.0, 11.0]
    assert r.json()["retained_from"] == kept_from  # the candles before it may be missing
    r = await http_get(gw, f"/ohlcv/NEAR_USDT?interval=1m&start={kept_from}&end={T0 + HOUR}")
    assert r.json()["retained_from"] is None and len(r.json()["candles"]) == 2


async def test_replay_then_live_for_candles_and_raw_ticks(gw: str, feed: Feed) -> None:
    candles = [candle("LINK/USDT", T0 + i * 60_000, 5.0 + i) for i in range(3)]
    await feed.send("fiml.ohlcv", *candles)
    await feed.send("fiml.raw", *[tick("LINK/USDT", 7.0 + i, T0 + i, i) for i in range(4)])
    async with connect(f"ws://{gw}/ws/stream") as ws:
        await subscribe(
            ws,
            stream_type="ohlcv",
            symbols=["LINK/USDT"],
            replay_from=T0,
            subscription_id="candles",
            mode="realtime",  # what follows the replay live is not conflated: none lost
        )
        await subscribe(
            ws,
            stream_type="price",
            symbols=["LINK/USDT"],
            replay_from=T0,
            replay_to=T0 + HOUR,
            params={"source": "raw"},
            subscription_id="raw",
        )
        complete: dict[str, int] = {}
        records: dict[str, list[float]] = {"candles": [], "raw": []}
        # A replay that continues live reads history up to where the hub is; records the hub
        # (on a loaded machine) has not read yet come right after replay_complete, live: none
        # lost, none twice. The bounded raw replay reads to the end offsets: all four.
        while len(complete) < 2 or len(records["candles"]) < 3:
            m = await recv_until(ws, lambda m: m["type"] in ("data", "replay_complete"))
            if m["type"] == "replay_complete":
                complete[m["subscription_id"]] = m["records"]
            else:
                key = m["subscription_id"]
                records[key] += [d["close"] if key == "candles" else d["price"] for d in m["data"]]
        assert complete["raw"] == 4 and complete["candles"] <= 3
        assert records == {"candles": [5.0, 6.0, 7.0], "raw": [7.0, 8.0, 9.0, 10.0]}
        await feed.send("fiml.ohlcv", candle("LINK/USDT", T0 + 180_000, 42.0))
        live = await recv_until(ws, is_type("data"))
        assert live["subscription_id"] == "candles" and live["data"][0]["close"] == 42.0


async def test_a_resume_from_a_position_retention_deleted_is_refused_naming_what_is_left(
    gw: str, feed: Feed, kafka_bootstrap: str
) -> None:
    """Issue 17: a position older than retention gets a typed error naming where the log now
    starts, never a silent gap."""
    async with connect(f"ws://{gw}/ws/stream") as ws:
        await subscribe(ws, **RESUMABLE, snapshot=False)
        await feed.send("fiml.prices", price("ADA/USDT", 1.0, T0))
        last = (await collect_prices(ws, 1))[-1]
    await feed.send("fiml.prices", *[price("ADA/USDT", 2.0 + i, T0 + 1 + i) for i in range(3)])
    await delete_everything(kafka_bootstrap, "fiml.prices")  # what retention does
    await feed.send("fiml.prices", price("ADA/USDT", 9.0, T0 + 9))
    await wait_cached(gw, "ADA_USDT", 9.0)
    async with connect(f"ws://{gw}/ws/stream") as ws:
        ack = await resume(ws, last)
        assert ack["type"] == "subscription_ack"  # the token is good; the records are gone
        refused = await recv_until(ws, is_type("error"))
        assert refused["error_code"] == "RESUME_UNAVAILABLE"
        assert "was deleted" in refused["message"] and "log starts at" in refused["message"]
