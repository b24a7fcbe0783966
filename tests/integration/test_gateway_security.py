"""The gateway on a network: credentials, entitlements, origins, isolation and the published
limits, against a real broker and real WebSocket clients. Each limit is tried at the limit,
one past it, and with another client beside it that must not notice."""

# The fixtures are imported from the sibling module, so test parameters "redefine" them.
# ruff: noqa: F811

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import jwt
import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from gateway import GatewaySettings
from gateway.auth import Entitlements, KeyFile
from tests.integration.test_gateway import (  # noqa: F401
    DAY,
    T0,
    Feed,
    feed,
    gw,
    is_type,
    price,
    recv,
    recv_until,
    running_gateway,
    settings,
    subscribe,
    topics,
    until,
    wait_cached,
)

pytestmark = pytest.mark.integration

SECRET = "a shared secret of at least 32 bytes!"


@pytest.fixture
def keys(tmp_path: Path) -> KeyFile:
    return KeyFile(tmp_path / "keys.json")


@pytest.fixture
def locked(settings: GatewaySettings, keys: KeyFile) -> GatewaySettings:
    """A gateway that refuses anonymous clients, as one bound to a public address does."""
    return replace(
        settings,
        anonymous="deny",
        keys_file=str(keys.path),
        jwt_secret=SECRET,
        auth_timeout_s=1.0,
    )


@pytest.fixture
async def gw_locked(locked: GatewaySettings) -> AsyncIterator[str]:
    async with running_gateway(locked) as address:
        yield address


async def closed_with(ws: ClientConnection, deadline: float = 10.0) -> int | None:
    """The close code the server sent, reading (and dropping) whatever came before it."""
    try:
        async with asyncio.timeout(deadline):
            while True:
                await ws.recv()
    except ConnectionClosed as exc:
        return exc.rcvd.code if exc.rcvd is not None else None


async def send(ws: ClientConnection, **message: Any) -> dict[str, Any]:
    await ws.send(orjson.dumps(message).decode())
    return await recv(ws)


async def test_without_credentials_a_client_is_refused_with_typed_codes(gw_locked: str) -> None:
    url = f"ws://{gw_locked}/ws/stream"
    async with connect(url) as ws:
        welcome = await send(ws, type="hello")
        assert welcome["type"] == "welcome" and welcome["authenticated"] is False
        assert welcome["limits"]["max_symbols_per_subscription"] == 50
        refused = await send(ws, type="subscribe", stream_type="price", symbols=["BTC/USDT"])
        assert refused["error_code"] == "AUTH_REQUIRED"
        failed = await send(ws, type="auth", token="fiml_00000000_wrong")
        assert failed["error_code"] == "AUTH_FAILED" and "fiml_" not in failed["message"]
        assert await closed_with(ws) == 4001  # no valid credentials within auth_timeout_s
    for bad in ({"Authorization": "Bearer fiml_nope_nope"}, {"X-API-Key": "garbage"}):
        async with connect(url, additional_headers=bad) as ws:
            assert await closed_with(ws) == 4001
    async with httpx.AsyncClient(base_url=f"http://{gw_locked}") as client:
        assert (await client.get("/prices/BTC_USDT")).status_code == 401
        assert (await client.get("/metrics")).status_code == 401
        assert (await client.get("/docs")).status_code == 401
        assert (await client.get("/ws/connections?details=true")).status_code == 401
        assert (await client.get("/ws/connections")).status_code == 200  # the seed's counts


async def test_a_key_limited_to_btc_usdt_prices_gets_exactly_that(
    gw_locked: str, keys: KeyFile, feed: Feed
) -> None:
    key, _ = keys.create("btc", Entitlements(streams=frozenset({"price"}), symbols=("BTC/USDT",)))
    url = f"ws://{gw_locked}/ws/stream"
    await feed.send("fiml.prices", price("BTC/USDT", 1.0, T0), price("ETH/USDT", 2.0, T0))
    async with connect(url) as ws:
        welcome = await send(ws, type="auth", token=key)
        assert welcome["type"] == "welcome" and welcome["principal"] == "btc"
        for refused_request in (
            {"stream_type": "price", "symbols": ["ETH/USDT"]},
            {"stream_type": "price", "symbols": ["BTC/USDT", "ETH/USDT"]},
            {"stream_type": "ohlcv", "symbols": ["BTC/USDT"]},
            {"stream_type": "price", "symbols": ["BTC/USDT"], "params": {"source": "raw"}},
        ):
            error = await subscribe(ws, **refused_request)
            assert error["error_code"] == "FORBIDDEN", refused_request
        ack = await subscribe(ws, stream_type="price", symbols=["BTC/USDT"], interval_ms=100)
        assert ack["type"] == "subscription_ack"
        await feed.send("fiml.prices", price("BTC/USDT", 3.0, T0 + 1), price("ETH/USDT", 4.0, T0))
        data = await recv_until(ws, lambda m: m["type"] == "data" and m["data"][0]["price"] == 3.0)
        assert {d["symbol"] for d in data["data"]} == {"BTC/USDT"}
    # the same key through the handshake: a header, or ?token= for browsers
    for header in ({"X-API-Key": key}, None):
        target = url if header else f"{url}?token={key}"
        async with connect(target, additional_headers=header) as ws:
            ack = await subscribe(ws, stream_type="price", symbols=["BTC/USDT"])
            assert ack["type"] == "subscription_ack"
    headers = {"Authorization": f"Bearer {key}"}
    # the hub has BTC/USDT 3.0 cached: the subscription above received it
    async with httpx.AsyncClient(base_url=f"http://{gw_locked}", headers=headers) as client:
        assert (await client.get("/prices/BTC_USDT")).status_code == 200
        assert (await client.get("/prices/ETH_USDT")).status_code == 403
        assert (await client.get("/ohlcv/BTC_USDT")).status_code == 403
        assert (await client.get("/metrics")).status_code == 403  # not an admin key
    admin, _ = keys.create("ops", Entitlements(admin=True))
    async with httpx.AsyncClient(
        base_url=f"http://{gw_locked}", headers={"X-API-Key": admin}
    ) as client:
        assert (await client.get("/metrics")).status_code == 200
        assert (await client.get("/docs")).status_code == 200
        assert (await client.get("/ws/connections?details=true")).status_code == 200


async def test_a_revoked_key_is_refused_at_the_next_connection(
    gw_locked: str, keys: KeyFile
) -> None:
    key, entry = keys.create("temp", Entitlements())
    url = f"ws://{gw_locked}/ws/stream?token={key}"
    async with connect(url) as ws:
        assert (await subscribe(ws, stream_type="price", symbols=["BTC/USDT"]))["type"] == (
            "subscription_ack"
        )
    assert keys.revoke(entry["id"])
    async with connect(url) as ws:
        assert await closed_with(ws) == 4001


async def test_a_jwt_is_refreshed_in_band_and_closes_when_it_expires(gw_locked: str) -> None:
    def token(exp_s: float, sub: str = "dana") -> str:
        return jwt.encode({"sub": sub, "exp": int(time.time() + exp_s)}, SECRET, "HS256")

    async with connect(f"ws://{gw_locked}/ws/stream") as ws:
        welcome = await send(ws, type="auth", token=token(2))
        assert welcome["authenticated"] and welcome["expires_at_ms"] is not None
        # another subject's token cannot take the connection over
        assert (await send(ws, type="auth", token=token(60, "eve")))["error_code"] == "AUTH_FAILED"
        refreshed = await send(ws, type="auth", token=token(3))
        assert refreshed["expires_at_ms"] > welcome["expires_at_ms"]
        assert await closed_with(ws, deadline=15) == 4001  # expired, not refreshed again


async def test_a_jwt_given_at_the_handshake_closes_when_it_expires(gw_locked: str) -> None:
    """Found in review: only a token sent in an ``auth`` message had its expiry enforced; one
    given at the handshake (the header, or ``?token=``) kept the connection for its lifetime."""

    def token() -> str:
        return jwt.encode({"sub": "dana", "exp": int(time.time() + 3)}, SECRET, "HS256")

    url = f"ws://{gw_locked}/ws/stream"
    async with connect(f"{url}?token={token()}") as ws:
        assert (await send(ws, type="hello"))["authenticated"]
        assert await closed_with(ws, deadline=15) == 4001
    header = {"Authorization": f"Bearer {token()}"}
    async with connect(url, additional_headers=header) as ws:
        assert (await send(ws, type="hello"))["authenticated"]
        assert await closed_with(ws, deadline=15) == 4001


async def test_two_tabs_may_use_the_same_subscription_id(gw: str, feed: Feed) -> None:
    url = f"ws://{gw}/ws/stream"
    async with connect(url) as tab1, connect(url) as tab2:
        for tab in (tab1, tab2):
            ack = await subscribe(
                tab,
                stream_type="price",
                symbols=["SOL/USDT"],
                subscription_id="prices",
                interval_ms=100,
            )
            assert ack["type"] == "subscription_ack", ack
        assert (
            await subscribe(
                tab1, stream_type="price", symbols=["SOL/USDT"], subscription_id="prices"
            )
        )["error_code"] == "SUBSCRIPTION_ERROR"
        await feed.send("fiml.prices", price("SOL/USDT", 7.0, T0))
        for tab in (tab1, tab2):
            data = await recv_until(
                tab, lambda m: m["type"] == "data" and m["data"][-1]["price"] == 7.0
            )
            assert data["subscription_id"] == "prices"


async def test_a_foreign_origin_is_refused_and_the_dashboard_origin_is_not(gw: str) -> None:
    url = f"ws://{gw}/ws/stream"
    with pytest.raises(InvalidStatus) as refused:
        async with connect(url, origin="https://evil.example"):  # type: ignore[arg-type]
            pass
    assert refused.value.response.status_code == 403
    for origin in (f"http://{gw}", None):
        async with connect(url, origin=origin) as ws:  # type: ignore[arg-type]
            assert (await send(ws, type="hello"))["type"] == "welcome"


async def test_connections_per_ip_at_the_limit_and_one_past_it(
    settings: GatewaySettings,
) -> None:
    async with running_gateway(replace(settings, max_connections_per_ip=2)) as address:
        url = f"ws://{address}/ws/stream"
        async with connect(url) as one, connect(url) as two:
            async with connect(url) as three:
                assert await closed_with(three) == 4029
            for ws in (one, two):  # the two within the limit are unaffected
                assert (await send(ws, type="hello"))["type"] == "welcome"
        async with connect(url) as again:  # freed when they closed
            assert (await send(again, type="hello"))["type"] == "welcome"


async def test_messages_per_second_over_the_limit_are_refused_then_closed(
    settings: GatewaySettings,
) -> None:
    limited = replace(settings, max_messages_per_s=3.0, max_rate_violations=4)
    async with running_gateway(limited) as address:
        url = f"ws://{address}/ws/stream"
        async with connect(url) as flood, connect(url) as calm:
            for _ in range(3):  # at the limit: answered
                assert (await send(flood, type="hello"))["type"] == "welcome"
            assert (await send(flood, type="hello"))["error_code"] == "RATE_LIMITED"
            for _ in range(10):
                await flood.send('{"type": "hello"}')
            assert await closed_with(flood) == 4008
            assert (await send(calm, type="hello"))["type"] == "welcome"  # unaffected


async def test_replay_limits_speed_range_and_concurrency(
    settings: GatewaySettings, feed: Feed
) -> None:
    await feed.send("fiml.prices", *[price("XRP/USDT", 1.0 + i, T0 + i * 1000) for i in range(5)])
    limited = replace(settings, max_replays_per_connection=1, max_replay_range_ms=2 * DAY)
    async with running_gateway(limited) as address, connect(f"ws://{address}/ws/stream") as ws:
        base = {"stream_type": "price", "symbols": ["XRP/USDT"]}
        slow = await subscribe(ws, **base, replay_from=T0, replay_speed=0.5)
        assert slow["error_code"] == "RATE_LIMITED" and slow["field"] == "replay_speed"
        far = await subscribe(ws, **base, replay_from=T0 - 3 * DAY)
        assert far["error_code"] == "RATE_LIMITED" and far["field"] == "replay_from"
        # at the limit: one replay running (real time: 4 s of records)
        first = await subscribe(
            ws,
            **base,
            replay_from=T0,
            replay_to=T0 + 5000,
            replay_speed=1.0,
            subscription_id="r1",
        )
        assert first["type"] == "subscription_ack"
        second = await subscribe(
            ws, **base, replay_from=T0, replay_to=T0 + 5000, subscription_id="r2"
        )
        assert second["error_code"] == "RATE_LIMITED"
        done = await recv_until(ws, is_type("replay_complete"), deadline=30)
        assert done["subscription_id"] == "r1" and done["records"] == 5

        async def third() -> bool:  # the slot is freed when the replay's task ends
            await asyncio.sleep(0.2)  # stay under the messages-a-second limit
            again = await subscribe(
                ws, **base, replay_from=T0, replay_to=T0 + 5000, subscription_id="r3"
            )
            return bool(again["type"] == "subscription_ack")

        await until(third, "the replay slot to be free again")


async def test_a_connection_ends_at_its_lifetime(settings: GatewaySettings) -> None:
    gateway = running_gateway(replace(settings, max_connection_s=1.0))
    async with gateway as address, connect(f"ws://{address}/ws/stream") as ws:
        assert await closed_with(ws) == 4010


async def test_replays_per_gateway_at_the_limit_and_one_past_it(
    settings: GatewaySettings, feed: Feed
) -> None:
    await feed.send("fiml.prices", *[price("LTC/USDT", 1.0 + i, T0 + i * 1000) for i in range(5)])
    limited = replace(settings, max_replays=1, max_replays_per_connection=2)
    async with running_gateway(limited) as address:
        url = f"ws://{address}/ws/stream"
        async with connect(url) as one, connect(url) as two:
            base = {
                "stream_type": "price",
                "symbols": ["LTC/USDT"],
                "replay_from": T0,
                "replay_to": T0 + 5000,
            }
            first = await subscribe(one, **base, replay_speed=1.0, subscription_id="a")
            assert first["type"] == "subscription_ack"  # at the limit
            refused = await subscribe(two, **base, subscription_id="b")  # one past it
            assert refused["error_code"] == "RATE_LIMITED" and "gateway" in refused["message"]
            live = await subscribe(two, stream_type="price", symbols=["LTC/USDT"])
            assert live["type"] == "subscription_ack"  # the other client is otherwise served
            await recv_until(one, is_type("replay_complete"), deadline=30)


async def test_connections_per_key_at_the_limit_and_one_past_it(
    locked: GatewaySettings, keys: KeyFile
) -> None:
    key, _ = keys.create("pair", Entitlements())
    other, _ = keys.create("other", Entitlements())
    async with running_gateway(replace(locked, max_connections_per_key=2)) as address:
        url = f"ws://{address}/ws/stream"
        async with connect(f"{url}?token={key}") as a, connect(url) as b:
            assert (await send(b, type="auth", token=key))["type"] == "welcome"
            async with connect(f"{url}?token={key}") as c:
                assert await closed_with(c) == 4029
            async with connect(url) as d:  # through an auth message, the same
                await d.send(orjson.dumps({"type": "auth", "token": key}).decode())
                assert await closed_with(d) == 4029
            async with connect(f"{url}?token={other}") as e:  # another key is unaffected
                assert (await send(e, type="hello"))["authenticated"] is True
            assert (await send(a, type="hello"))["type"] == "welcome"


async def test_a_client_that_does_not_read_is_cut_at_the_queued_bytes_limit(
    settings: GatewaySettings,
) -> None:
    """Errors the client never reads pile up in its outbox: past max_queued_bytes it is
    closed with 4000, below max_queued_frames; another client is unaffected."""
    tight = replace(settings, max_queued_bytes=4096, max_queued_frames=1000, max_messages_per_s=1e6)
    async with running_gateway(tight, sndbuf=4096) as address:
        url = f"ws://{address}/ws/stream"
        async with connect(url, max_queue=1) as deaf, connect(url) as calm:
            bad = orjson.dumps(
                {"type": "subscribe", "stream_type": "price", "symbols": ["NOPE/" + "X" * 50]}
            ).decode()
            with contextlib.suppress(ConnectionClosed):
                for _ in range(2_000):  # ~400 KiB of errors, unread
                    await deaf.send(bad)
            assert await closed_with(deaf, deadline=30) == 4000
            assert (await send(calm, type="hello"))["type"] == "welcome"


async def test_a_foreign_host_header_is_refused_where_hosts_are_listed(
    settings: GatewaySettings,
) -> None:
    gateway = running_gateway(replace(settings, trusted_hosts=("127.0.0.1",)))
    async with gateway as address, httpx.AsyncClient(base_url=f"http://{address}") as client:
        assert (await client.get("/health")).status_code == 200
        spoofed = await client.get("/health", headers={"Host": "evil.example"})
        assert spoofed.status_code == 400
