"""A Python client of the FIML Stream gateway that never misses a record without saying so.

In the style of CCXT Pro's ``watch_*`` methods, but as async iterators::

    async with FimlStream("ws://127.0.0.1:8000") as fiml:
        async for price in fiml.watch_prices(["BTC/USDT", "ETH/USDT"]):
            print(price.symbol, price.price, price.confidence)

Each ``watch_*`` call is one subscription on its own WebSocket connection. When the connection
drops (a gateway restarts, a load balancer moves the client, the network blinks, or the
gateway goes quiet for longer than its heartbeat promises), the client reconnects with
exponential backoff and full jitter, and resumes from the ``resume_token`` of the last data
message it received (docs/WEBSOCKET.md, "Resume"): on any gateway of the deployment, every
record missed arrives, in order, then live data. Only when a resume is impossible (the
position was deleted by retention, the topics were rebuilt) does it subscribe afresh, with a
snapshot, and count a gap (``stats.gaps``) so that the caller knows.

``binary=True`` asks the gateway for msgpack data frames (docs/WEBSOCKET.md, "Binary frames"):
the same records, cheaper to send and to decode. ``replay`` reads a bounded range of history.

What it needs of the protocol is documented there; it uses nothing else.
"""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal, TypeVar

import orjson
import ormsgpack
from pydantic import BaseModel
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from schemas.codec import columns_of
from schemas.records import OHLCVUpdate, PriceUpdate, QuoteUpdate, TradeUpdate

__all__ = ["Backoff", "FimlStream", "FimlStreamError", "Stats", "records_of"]

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)

#: The gateway's heartbeat period by default (docs/WEBSOCKET.md); a connection silent for
#: ``stale_after`` is taken for dead even if TCP says nothing.
HEARTBEAT_S = 30.0


class FimlStreamError(Exception):
    """The gateway refused a subscription in a way no retry fixes (unknown symbol, forbidden,
    bad credentials): ``code`` is its ``error_code``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with full jitter (the AWS architecture blog's): the n-th retry in a
    row waits a uniform random time in ``[0, min(cap_s, base_s x 2^n)]``, so that many clients
    dropped at once do not come back at once. (tenacity computes the same, but as a decorator
    around a call; here the loop is the client's own.)"""

    base_s: float = 0.5
    cap_s: float = 30.0

    def delay(self, attempt: int, rng: random.Random) -> float:
        return rng.uniform(0.0, min(self.cap_s, self.base_s * 2 ** min(attempt, 30)))


@dataclass(slots=True)
class Stats:
    """What happened to the connection of one ``watch_*`` (read it while iterating)."""

    connects: int = 0  # connections that got a subscription ack
    resumes: int = 0  # of which resumed a subscription without a gap
    gaps: int = 0  # times records may have been missed (subscribed afresh instead)
    records: int = 0
    last_seq: int = 0
    errors: list[str] = field(default_factory=list)  # the gateway's errors, newest last
    #: with ``status=True``: each symbol's last ``status`` message (live, stale, recovering,
    #: and its providers' states), and the newest event time the heartbeats reported
    statuses: dict[str, dict[str, Any]] = field(default_factory=dict)
    last_event_time_ms: int | None = None


class FimlStream:
    """A client of one gateway URL (``ws://host:port``, or ``wss://``)."""

    def __init__(
        self,
        url: str = "ws://127.0.0.1:8000",
        *,
        token: str | None = None,
        backoff: Backoff = Backoff(),
        stale_after_s: float = 2.5 * HEARTBEAT_S,
        max_attempts: int | None = None,
        seed: int | None = None,
        binary: bool = False,
    ) -> None:
        """``token``: an API key or a JWT, where the gateway wants one. ``max_attempts``:
        failed connections in a row before giving up (``FimlStreamError`` ``UNREACHABLE``;
        None: never). ``seed`` makes the jitter repeatable (tests). ``binary``: data messages
        as msgpack binary frames."""
        self._url = url.rstrip("/").replace("http", "ws", 1) + "/ws/stream"
        if binary:
            self._url += "?format=msgpack"
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._backoff = backoff
        self._stale_after_s = stale_after_s
        self._max_attempts = max_attempts
        self._rng = random.Random(seed)
        self.stats: dict[str, Stats] = {}  # subscription id -> its stats

    async def __aenter__(self) -> FimlStream:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None  # each watch closes its own connection when its iterator ends

    # --- typed streams ----------------------------------------------------------------------

    def watch_prices(self, symbols: list[str], **options: Any) -> AsyncGenerator[PriceUpdate, None]:
        """Consensus prices (``PriceUpdate``), every one (``mode: realtime``) unless
        ``mode="conflated"`` and ``interval_ms`` are given."""
        return self._typed(PriceUpdate, self.watch("price", symbols, **options))

    def watch_quotes(self, symbols: list[str], **options: Any) -> AsyncGenerator[QuoteUpdate, None]:
        """Best bid and ask across providers (``QuoteUpdate``)."""
        return self._typed(QuoteUpdate, self.watch("quote", symbols, **options))

    def watch_trades(self, symbols: list[str], **options: Any) -> AsyncGenerator[TradeUpdate, None]:
        """Every trade (``TradeUpdate``), de-duplicated across providers."""
        return self._typed(TradeUpdate, self.watch("trades", symbols, **options))

    def watch_ohlcv(
        self, symbols: list[str], interval: str = "1m", **options: Any
    ) -> AsyncGenerator[OHLCVUpdate, None]:
        """Candles of ``interval`` (1s, 1m, 5m, 15m, 1h, 1d): each revision of the open one,
        then its final (``is_closed``)."""
        params = {**options.pop("params", {}), "interval": interval}
        return self._typed(OHLCVUpdate, self.watch("ohlcv", symbols, params=params, **options))

    @staticmethod
    async def _typed(
        model: type[M], records: AsyncIterator[dict[str, Any]]
    ) -> AsyncGenerator[M, None]:
        async for record in records:
            yield model.model_validate(record)

    # --- history ----------------------------------------------------------------------------

    async def replay(
        self,
        stream_type: str,
        symbols: list[str],
        start_ms: int,
        end_ms: int,
        *,
        params: Mapping[str, Any] | None = None,
    ) -> AsyncGenerator[dict[str, Any], None]:
        """The records of ``symbols`` with ``start_ms <= event_time_ms < end_ms``, in event
        order per symbol, as fast as the gateway sends them; ends after the last one.

        A bounded replay has no resume token: a dropped connection is an error, not retried
        (replay the rest from the last record's ``event_time_ms``).

        Raises:
            FimlStreamError: the replay is refused (``REPLAY_ERROR``, ``RATE_LIMITED``,
                ``FORBIDDEN``...) or the connection drops (``DISCONNECTED``).
        """
        async for message in self._replay(stream_type, symbols, start_ms, end_ms, params):
            for record in records_of(message):
                yield record

    async def replay_columns(
        self,
        stream_type: str,
        symbols: list[str],
        start_ms: int,
        end_ms: int,
        *,
        params: Mapping[str, Any] | None = None,
    ) -> AsyncGenerator[dict[str, list[Any]], None]:
        """``replay`` as batches of columns (key -> one value per record), the form analytics
        wants (``pandas.DataFrame(batch)``). With ``binary=True`` they are the frames' own
        columns, never turned into records: the fastest way to read history."""
        async for message in self._replay(stream_type, symbols, start_ms, end_ms, params):
            columns = message.get("columns")
            yield columns if isinstance(columns, dict) else columns_of(message["data"], None)

    async def _replay(
        self,
        stream_type: str,
        symbols: list[str],
        start_ms: int,
        end_ms: int,
        params: Mapping[str, Any] | None,
    ) -> AsyncGenerator[dict[str, Any], None]:
        """The data messages of a bounded replay, until ``replay_complete``."""
        request = {
            "type": "subscribe",
            "stream_type": stream_type,
            "symbols": symbols,
            "mode": "realtime",
            "snapshot": False,
            "replay_from": start_ms,
            "replay_to": end_ms,
            "subscription_id": f"fiml-replay-{uuid.uuid4().hex}",
            "params": dict(params or {}),
        }
        try:
            async with connect(self._url, additional_headers=self._headers, max_size=2**24) as ws:
                await ws.send(orjson.dumps(request).decode())
                while True:
                    message = await self._recv(ws)
                    kind = message.get("type")
                    if kind == "data":
                        yield message
                    elif kind == "replay_complete":
                        return
                    elif kind == "error":
                        raise FimlStreamError(
                            str(message.get("error_code")), str(message.get("message"))
                        )
        except (OSError, ConnectionClosed, InvalidHandshake, TimeoutError) as exc:
            raise FimlStreamError("DISCONNECTED", f"replay interrupted: {exc!r}") from None

    # --- any stream ---------------------------------------------------------------------------

    async def watch(
        self,
        stream_type: str,
        symbols: list[str],
        *,
        mode: Literal["realtime", "conflated"] = "realtime",
        interval_ms: int = 1_000,
        snapshot: bool = True,
        params: Mapping[str, Any] | None = None,
        subscription_id: str | None = None,
        status: bool = False,
    ) -> AsyncGenerator[dict[str, Any], None]:
        """The records of one subscription, as the gateway sends them (dicts), for as long as
        the caller iterates; reconnects and resumes by itself (module docstring). With
        ``status``, the symbols' liveness is kept in ``stats[subscription_id].statuses``.

        Raises:
            FimlStreamError: the subscription is refused for good (not retried).
        """
        sub_id = subscription_id or f"fiml-stream-{uuid.uuid4().hex}"
        stats = self.stats[sub_id] = Stats()
        request: dict[str, Any] = {
            "type": "subscribe",
            "stream_type": stream_type,
            "symbols": symbols,
            "mode": mode,
            "interval_ms": interval_ms,
            "snapshot": snapshot,
            "subscription_id": sub_id,
            "params": dict(params or {}),
            "status": status,
        }
        position: tuple[int, str] | None = None  # (seq, resume token) of the last message
        attempt = 0
        while True:
            try:
                async with connect(
                    self._url, additional_headers=self._headers, max_size=2**24
                ) as ws:
                    ack = await self._subscribe(ws, request, position, stats)
                    if ack is None:  # cannot resume: afresh (with a snapshot), and say so
                        if position is not None:
                            stats.gaps += 1
                            position = None
                        ack = await self._subscribe(ws, request, None, stats)
                        assert ack is not None
                    attempt = 0
                    stats.connects += 1
                    if position is None and ack.get("resume_token"):
                        position = (0, ack["resume_token"])
                    async for message in self._messages(ws, sub_id, stats):
                        seq = message["seq"]
                        if seq != stats.last_seq + 1 and stats.last_seq:
                            stats.gaps += 1  # never expected: the gateway numbers each one
                        stats.last_seq = seq
                        for record in records_of(message):
                            stats.records += 1
                            yield record
                        if message.get("resume_token"):
                            position = (seq, message["resume_token"])
            except _Dropped as exc:  # subscribe afresh at once, and say records may be missing
                log.warning("fiml_stream: %s: %s; subscribing afresh", sub_id, exc)
                stats.gaps += 1
                position = None
            except (OSError, ConnectionClosed, InvalidHandshake, TimeoutError, _Retry) as exc:
                delay = self._backoff.delay(attempt, self._rng)
                if isinstance(exc, _Retry) and exc.after_s is not None:
                    delay = max(delay, exc.after_s)
                attempt += 1
                if self._max_attempts is not None and attempt >= self._max_attempts:
                    raise FimlStreamError(
                        "UNREACHABLE",
                        f"cannot reach the gateway at {self._url} ({attempt} tries): {exc}",
                    ) from None
                log.info("fiml_stream: %s: %r; reconnecting in %.2f s", sub_id, exc, delay)
                await asyncio.sleep(delay)  # backoff, not synchronisation
            except InvalidURI as exc:
                raise FimlStreamError("INVALID_URL", str(exc)) from None

    async def _subscribe(
        self,
        ws: ClientConnection,
        request: dict[str, Any],
        position: tuple[int, str] | None,
        stats: Stats,
    ) -> dict[str, Any] | None:
        """Send the subscription (resuming from ``position`` if given) and return its ack; None
        if a resume is impossible for good.

        Raises:
            _Retry: the gateway asks to try again later (it has not caught up yet).
            FimlStreamError: refused for good.
        """
        sent = dict(request)
        if position is not None:
            sent.update(resume_from=position[0], resume_token=position[1], snapshot=False)
        elif stats.gaps:
            sent["snapshot"] = True  # after a gap, start from each symbol's current value
        await ws.send(orjson.dumps(sent).decode())
        while True:
            reply = await self._recv(ws)
            kind = reply.get("type")
            if kind == "subscription_ack":
                if position is not None:
                    stats.resumes += 1
                return reply
            if kind != "error":
                continue  # a heartbeat or a welcome
            stats.errors.append(f"{reply.get('error_code')}: {reply.get('message')}")
            if reply.get("retry_after_ms") is not None:
                raise _Retry(reply["retry_after_ms"] / 1000)
            if reply.get("error_code") == "RESUME_UNAVAILABLE" and position is not None:
                return None
            raise FimlStreamError(str(reply.get("error_code")), str(reply.get("message")))

    async def _messages(
        self, ws: ClientConnection, sub_id: str, stats: Stats
    ) -> AsyncIterator[dict[str, Any]]:
        """The data messages of the connection; ends (``ConnectionClosed``, ``TimeoutError``)
        when it closes or stays silent past ``stale_after_s`` (heartbeats count as life).
        Status messages and heartbeats' event times go into ``stats``."""
        while True:
            message = await self._recv(ws)
            kind = message.get("type")
            if kind == "data":
                yield message
            elif kind == "status":
                stats.statuses[str(message.get("symbol"))] = message
            elif kind == "heartbeat" and isinstance(message.get("subscriptions"), dict):
                newest = message["subscriptions"].get(sub_id)
                if isinstance(newest, int):
                    stats.last_event_time_ms = newest
            elif kind == "error":
                stats.errors.append(f"{message.get('error_code')}: {message.get('message')}")
                if message.get("subscription_id") == sub_id:
                    # the gateway dropped it (a resume whose records retention deleted)
                    raise _Dropped(str(message.get("message")))
                log.warning("fiml_stream: %s", message.get("message"))

    async def _recv(self, ws: ClientConnection) -> dict[str, Any]:
        async with asyncio.timeout(self._stale_after_s):
            raw = await ws.recv()
        # binary frames are msgpack data messages; everything else is JSON text
        decoded: dict[str, Any] = (
            ormsgpack.unpackb(raw) if isinstance(raw, bytes) else orjson.loads(raw)
        )
        return decoded


def records_of(message: dict[str, Any]) -> list[dict[str, Any]]:
    """The records of a data message: its ``data``, or, from a binary (msgpack) frame, its
    ``columns`` turned back into one dict per record."""
    columns = message.get("columns")
    if not isinstance(columns, dict):
        data: list[dict[str, Any]] = message["data"]
        return data
    keys = list(columns)
    return [dict(zip(keys, row, strict=True)) for row in zip(*columns.values(), strict=True)]


class _Dropped(Exception):
    """The gateway ended the subscription after acknowledging it (its catch-up failed)."""


class _Retry(Exception):
    """The gateway said: the same request may work after ``after_s``."""

    def __init__(self, after_s: float | None) -> None:
        super().__init__(f"retry after {after_s} s")
        self.after_s = after_s
