"""What a client's messages do: subscribe (live, snapshot, replay, resume) and unsubscribe.

Validation is pure (``schemas.protocol`` and ``gateway.channels``); this module applies the
result to the registry, the hub's positions and the connection. Every rejected message becomes
an ``error`` message and the connection stays usable.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable

from gateway.catchup import catch_up
from gateway.channels import resolve, resolve_symbol
from gateway.connection import Connection, now_ms
from gateway.hub import Hub
from gateway.metrics import Metrics
from gateway.registry import Registry, ResumeStore
from gateway.settings import GatewaySettings
from gateway.subscription import Subscription
from schemas.codec import encode
from schemas.errors import ProtocolError, SymbolError
from schemas.protocol import (
    ErrorCode,
    ErrorMessage,
    SubscribeRequest,
    SubscriptionAck,
    UnsubscribeAck,
    UnsubscribeRequest,
    parse_client_message,
)

__all__ = ["Session"]

log = logging.getLogger(__name__)


class Session:
    """Applies one connection's client messages."""

    def __init__(
        self,
        conn: Connection,
        settings: GatewaySettings,
        hub: Hub,
        registry: Registry,
        store: ResumeStore,
        metrics: Metrics,
        clock: Callable[[], float],
    ) -> None:
        self.conn = conn
        self._settings = settings
        self._hub = hub
        self._registry = registry
        self._store = store
        self._metrics = metrics
        self._clock = clock
        self._tasks: dict[str, asyncio.Task[None]] = {}

    @property
    def settings(self) -> GatewaySettings:
        return self._settings

    @property
    def hub(self) -> Hub:
        return self._hub

    def handle(self, raw: str | bytes) -> None:
        """Apply one client frame; answers go to the connection's outbox."""
        message: SubscribeRequest | UnsubscribeRequest | None = None
        try:
            message = parse_client_message(raw)
            if isinstance(message, UnsubscribeRequest):
                if message.subscription_id is not None:
                    self.unsubscribe(message.subscription_id)
                else:
                    self.unsubscribe_matching(message)
            else:
                self.subscribe(message)
        except ProtocolError as exc:
            # A refused subscribe or resume names the client's id, so it knows which one.
            self.error(exc, message.subscription_id if message is not None else None)

    def error(self, exc: ProtocolError, subscription_id: str | None = None) -> None:
        self._metrics.client_errors += 1
        self.conn.put(encode(ErrorMessage.from_error(exc, now_ms(), subscription_id)))

    # --- subscribe ------------------------------------------------------------------------

    def subscribe(self, request: SubscribeRequest) -> None:
        """Raises: ProtocolError: the request cannot be served (the error names why)."""
        if request.resume_from is not None:
            self._resume(request)
            return
        if len(self.conn.subs) >= self._settings.max_subscriptions:
            raise ProtocolError(
                ErrorCode.TOO_MANY_SUBSCRIPTIONS,
                f"at most {self._settings.max_subscriptions} subscriptions per connection; "
                "unsubscribe first",
            )
        sub_id = request.subscription_id or uuid.uuid4().hex
        if sub_id in self._registry or sub_id in self.conn.subs:
            raise ProtocolError(
                ErrorCode.SUBSCRIPTION_ERROR,
                f"subscription_id {sub_id!r} is already in use",
                "subscription_id",
            )
        spec = resolve(request, self._settings.topics)
        self._store.discard(sub_id)
        replay = request.replay_from is not None
        sub = Subscription(
            id=sub_id,
            spec=spec,
            mode=request.mode,
            interval_s=request.interval_ms / 1000,
            max_pending=self._settings.max_pending_updates,
            history_size=self._settings.resume_history,
            held=replay,
            live=request.replay_to is None,
        )
        positions = self._hub.positions(spec.topic)
        now = self._clock()
        self._attach(sub)
        sub.start_at(positions)
        sub.begin(now)
        self.conn.put(self._ack(sub, request.interval_ms, replay=replay))
        if replay:
            self._start_catch_up(sub, None, positions if sub.live else None, request)
        elif request.snapshot:
            self._snapshot(sub, positions, now)

    def _snapshot(self, sub: Subscription, positions: tuple[int, ...], now: float) -> None:
        """The last value of each symbol. Conflated: pending like any update, so it is the
        first data message, one interval after the ack (a newer live value of a symbol takes
        its place). Real-time: sent at once, right after the ack."""
        latest = [(c, p) for c in sub.spec.channels if (p := self._hub.latest(c)) is not None]
        if not latest:
            return
        if sub.mode == "realtime":
            sub.take(now)
            items = [p for _, p in latest]
            self.conn.put(self.conn.frame_for(sub, items, positions), len(items))
            return
        for channel, payload in latest:
            sub.offer(channel, payload, now)
        self.conn.wake()

    def _resume(self, request: SubscribeRequest) -> None:
        assert request.subscription_id is not None and request.resume_from is not None
        sub_id, seq = request.subscription_id, request.resume_from

        def unavailable(why: str) -> ProtocolError:
            return ProtocolError(
                ErrorCode.RESUME_UNAVAILABLE,
                f"cannot resume {sub_id!r} from seq {seq}: {why}; subscribe again without "
                "resume_from",
                "resume_from",
            )

        if sub_id in self._registry:
            raise unavailable("it is still active (on this or another connection)")
        if len(self.conn.subs) >= self._settings.max_subscriptions:
            raise ProtocolError(
                ErrorCode.TOO_MANY_SUBSCRIPTIONS,
                f"at most {self._settings.max_subscriptions} subscriptions per connection",
            )
        sub = self._store.claim(sub_id, self._clock())
        if sub is None:
            raise unavailable("unknown here, or expired (gateway restarted or too long away)")
        starts = sub.positions_after(seq)
        if starts is None or seq > sub.seq:
            raise unavailable(f"seq {seq} is not among the last {sub.history_size} sent")
        sub.rewind(seq)
        sub.held = True
        ends = self._hub.positions(sub.spec.topic)
        self._attach(sub)
        self.conn.put(self._ack(sub, round(sub.interval_s * 1000), resumed_from=seq))
        self._start_catch_up(sub, starts, ends, None)

    def _attach(self, sub: Subscription) -> None:
        self._registry.add(sub, self.conn)
        self.conn.subs[sub.id] = sub

    def _ack(
        self,
        sub: Subscription,
        interval_ms: int,
        replay: bool = False,
        resumed_from: int | None = None,
    ) -> bytes:
        return encode(
            SubscriptionAck(
                timestamp_ms=now_ms(),
                subscription_id=sub.id,
                stream_type=sub.spec.stream_type,
                symbols=list(sub.spec.symbols),
                interval_ms=interval_ms,
                mode=sub.mode,
                replay=replay,
                resumed_from=resumed_from,
            )
        )

    def _start_catch_up(
        self,
        sub: Subscription,
        starts: tuple[int, ...] | None,
        ends: tuple[int, ...] | None,
        request: SubscribeRequest | None,
    ) -> None:
        task = asyncio.create_task(
            catch_up(self, sub, starts, ends, request), name=f"catch-up-{sub.id}"
        )
        self._tasks[sub.id] = task
        task.add_done_callback(lambda t: self._forget(sub.id, t))

    def _forget(self, sub_id: str, task: asyncio.Task[None]) -> None:
        if self._tasks.get(sub_id) is task:
            del self._tasks[sub_id]

    def catch_up_failed(self, sub: Subscription, exc: ProtocolError) -> None:
        """A replay or resume could not be served: tell the client and drop the subscription."""
        self._detach(sub)
        self.error(exc, sub.id)

    # --- unsubscribe and close ------------------------------------------------------------

    def unsubscribe(self, subscription_id: str) -> None:
        """Raises: ProtocolError: UNKNOWN_SUBSCRIPTION."""
        sub = self.conn.subs.get(subscription_id)
        if sub is None:
            raise ProtocolError(
                ErrorCode.UNKNOWN_SUBSCRIPTION,
                f"no subscription {subscription_id!r} on this connection",
                "subscription_id",
            )
        self._detach(sub)
        self.conn.put(encode(UnsubscribeAck(timestamp_ms=now_ms(), subscription_id=sub.id)))

    def unsubscribe_matching(self, request: UnsubscribeRequest) -> None:
        """The seed's form: end every subscription of ``request.stream_type`` whose symbols are
        all among ``request.symbols`` (every one of that stream type if none are given).

        Raises:
            ProtocolError: UNKNOWN_SYMBOL for a bad symbol; UNKNOWN_SUBSCRIPTION if none match.
        """
        assert request.stream_type is not None
        wanted: set[str] | None = None
        if request.symbols is not None:
            wanted = set()
            for index, raw in enumerate(request.symbols):
                try:
                    wanted.add(resolve_symbol(raw))
                except SymbolError as exc:
                    raise ProtocolError(
                        ErrorCode.UNKNOWN_SYMBOL,
                        f"unknown symbol {raw!r}: {exc.reason}",
                        f"symbols.{index}",
                    ) from None
        matching = [
            sub
            for sub in self.conn.subs.values()
            if sub.spec.stream_type is request.stream_type
            and (wanted is None or wanted.issuperset(sub.spec.symbols))
        ]
        if not matching:
            listed = f" covering only {sorted(wanted)}" if wanted is not None else ""
            raise ProtocolError(
                ErrorCode.UNKNOWN_SUBSCRIPTION,
                f"no {request.stream_type.value} subscription{listed} on this connection; "
                "unsubscribe by subscription_id to end one that has other symbols too",
                "symbols" if wanted is not None else "stream_type",
            )
        for sub in matching:
            self._detach(sub)
            self.conn.put(encode(UnsubscribeAck(timestamp_ms=now_ms(), subscription_id=sub.id)))

    def _detach(self, sub: Subscription) -> None:
        self._registry.remove(sub)
        self.conn.subs.pop(sub.id, None)
        self.conn.collect(sub)
        sub.clear()
        task = self._tasks.pop(sub.id, None)
        if task is not None:
            task.cancel()

    def park_all(self) -> None:
        """The connection ended: keep live subscriptions resumable, drop the rest."""
        now = self._clock()
        for sub in list(self.conn.subs.values()):
            self._detach(sub)
            if sub.live:
                self._store.park(sub, now)

    async def close(self) -> None:
        """Park everything and wait for cancelled catch-ups to finish."""
        tasks = list(self._tasks.values())
        self.park_all()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
