"""What a client's messages do: authenticate, hello, subscribe (live, snapshot, replay,
resume) and unsubscribe.

Validation is pure (``schemas.protocol``, ``gateway.channels``, ``gateway.auth``); this module
applies the result to the registry, the hub's positions and the connection. Every rejected
message becomes an ``error`` message and the connection stays usable; only the published limits
close it (too many refused messages in a row: 4008).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable

from aiolimiter import AsyncLimiter

from gateway.auth import Authenticator, Principal
from gateway.budget import ReplayBudget
from gateway.catchup import catch_up
from gateway.channels import StreamSpec, resolve, resolve_symbol
from gateway.connection import Connection, now_ms
from gateway.hub import Hub
from gateway.liveness import status_frame
from gateway.metrics import Metrics
from gateway.positions import Position, ResumeRefused, ResumeTokens
from gateway.registry import Registry
from gateway.settings import GatewaySettings
from gateway.subscription import Positions, Subscription
from schemas.codec import encode
from schemas.errors import ProtocolError, SymbolError
from schemas.protocol import (
    MAX_SYMBOLS,
    AuthRequest,
    ClientMessage,
    ErrorCode,
    ErrorMessage,
    HelloRequest,
    StreamType,
    SubscribeRequest,
    SubscriptionAck,
    UnsubscribeAck,
    UnsubscribeRequest,
    Welcome,
    parse_client_message,
)

__all__ = ["ReplaySlots", "Session", "published_limits"]

log = logging.getLogger(__name__)


class ReplaySlots:
    """Replays and resumes running at once in one gateway process, at most ``limit``, and the
    share of its event loop they take together (``budget``)."""

    def __init__(self, limit: int, budget: ReplayBudget) -> None:
        self.limit = limit
        self.running = 0
        self.budget = budget


def spec_key(spec: StreamSpec) -> str:
    """What a resume token is bound to besides its owner and id: what the subscription
    streams (a token of one stream cannot resume another)."""
    return "|".join((spec.stream_type.value, spec.topic, spec.variant, ",".join(spec.symbols)))


def published_limits(settings: GatewaySettings) -> dict[str, int | float]:
    """What ``welcome`` tells a client, and docs/WEBSOCKET.md's "Limits" table lists."""
    return {
        "max_subscriptions": settings.max_subscriptions,
        "max_symbols_per_subscription": MAX_SYMBOLS,
        "max_messages_per_s": settings.max_messages_per_s,
        "max_rate_violations": settings.max_rate_violations,
        "max_connections_per_ip": settings.max_connections_per_ip,
        "max_connections_per_key": settings.max_connections_per_key,
        "max_replays_per_connection": settings.max_replays_per_connection,
        "max_replays_per_gateway": settings.max_replays,
        "min_replay_speed": settings.min_replay_speed,
        "max_replay_range_ms": settings.max_replay_range_ms,
        "max_queued_frames": settings.max_queued_frames,
        "max_queued_bytes": settings.max_queued_bytes,
        "max_pending_updates": settings.max_pending_updates,
        "max_frame_bytes": settings.ws_max_size,
        "max_connection_s": settings.max_connection_s,
        "auth_timeout_s": settings.auth_timeout_s,
    }


class Session:
    """Applies one connection's client messages. ``principal`` is None until the client
    authenticates (when anonymous access is not allowed)."""

    def __init__(
        self,
        conn: Connection,
        settings: GatewaySettings,
        hub: Hub,
        registry: Registry,
        tokens: ResumeTokens,
        metrics: Metrics,
        clock: Callable[[], float],
        principal: Principal | None,
        authenticator: Authenticator,
        replays: ReplaySlots,
    ) -> None:
        self.conn = conn
        self.principal = principal
        self._authenticator = authenticator
        self._replays = replays
        # A token bucket: max_messages_per_s a second, as many at once. aiolimiter rather than
        # hand code; a message over the limit is refused at once, never waited for.
        self._limiter = AsyncLimiter(settings.max_messages_per_s, 1.0)
        self.violations = 0  # refused messages in a row (the service closes past the limit)
        self._settings = settings
        self._hub = hub
        self._registry = registry
        self._tokens = tokens
        self._metrics = metrics
        self._clock = clock
        self._tasks: dict[str, asyncio.Task[None]] = {}

    @property
    def settings(self) -> GatewaySettings:
        return self._settings

    @property
    def hub(self) -> Hub:
        return self._hub

    @property
    def replay_budget(self) -> ReplayBudget:
        return self._replays.budget

    async def receive(self, raw: str | bytes) -> None:
        """``handle`` one client frame, within the messages-a-second limit: a frame over it is
        refused with RATE_LIMITED (``violations`` counts them in a row)."""
        if not self._limiter.has_capacity():
            self.violations += 1
            self._metrics.rate_limited += 1
            self.error(
                ProtocolError(
                    ErrorCode.RATE_LIMITED,
                    f"over {self._settings.max_messages_per_s:g} messages a second: message "
                    f"ignored ({self.violations} in a row; "
                    f"{self._settings.max_rate_violations} close the connection)",
                )
            )
            return
        await self._limiter.acquire()  # at once: there is capacity
        self.violations = 0
        self.handle(raw)

    def handle(self, raw: str | bytes) -> None:
        """Apply one client frame; answers go to the connection's outbox."""
        message: ClientMessage | None = None
        try:
            message = parse_client_message(raw)
            if isinstance(message, AuthRequest):
                self.authenticate(message.token)
                return
            if isinstance(message, HelloRequest):
                if message.format is not None:
                    self.conn.binary = message.format == "msgpack"
                self.welcome()
                return
            self.require_principal()
            if isinstance(message, UnsubscribeRequest):
                if message.subscription_id is not None:
                    self.unsubscribe(message.subscription_id)
                else:
                    self.unsubscribe_matching(message)
            else:
                self.subscribe(message)
        except ProtocolError as exc:
            # A refused subscribe or resume names the client's id, so it knows which one.
            sub_id = getattr(message, "subscription_id", None)
            self.error(exc, sub_id if isinstance(sub_id, str) else None)

    # --- who the client is ----------------------------------------------------------------

    def require_principal(self) -> None:
        """Raises: ProtocolError: AUTH_REQUIRED until the client has authenticated."""
        if self.principal is None:
            raise ProtocolError(
                ErrorCode.AUTH_REQUIRED,
                "authenticate first: an auth message with an API key or a JWT",
                "type",
            )

    def authenticate(self, token: str) -> None:
        """Accept credentials, first or in band before the current ones expire (a refreshed
        token must have the same owner).

        Raises:
            ProtocolError: AUTH_FAILED (unknown, revoked, expired, or another owner's).
        """
        found = self._authenticator.authenticate(token)
        current = self.principal
        if found is None or (
            current is not None and current.authenticated and found.owner != current.owner
        ):
            self._metrics.auth_failures += 1
            raise ProtocolError(ErrorCode.AUTH_FAILED, "invalid credentials", "token")
        self.principal = found
        self.welcome()

    def welcome(self) -> None:
        principal = self.principal
        self.conn.put(
            encode(
                Welcome(
                    timestamp_ms=now_ms(),
                    authenticated=principal is not None and principal.authenticated,
                    principal=principal.name if principal is not None else "none",
                    expires_at_ms=principal.expires_at_ms if principal is not None else None,
                    limits=published_limits(self._settings),
                    format="msgpack" if self.conn.binary else "json",
                )
            )
        )

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
        if sub_id in self.conn.subs:  # ids belong to their connection
            raise ProtocolError(
                ErrorCode.SUBSCRIPTION_ERROR,
                f"subscription_id {sub_id!r} is already in use on this connection",
                "subscription_id",
            )
        spec = resolve(request, self._settings.topics)
        self._entitled(spec.stream_type, spec.symbols, spec.raw, request)
        replay = request.replay_from is not None
        if replay:
            self._check_replay(request)
        positions = self._hub.positions(spec.topic)
        now = self._clock()
        sub = self._start(sub_id, spec, request, held=replay, live=request.replay_to is None)
        self.conn.put(self._ack(sub, request.interval_ms, positions, replay=replay))
        self._statuses(sub)
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
            binary = self.conn.binary
            self.conn.put(self.conn.frame_for(sub, items, positions), len(items), binary)
            return
        for channel, payload in latest:
            sub.offer(channel, payload, now)
        self.conn.wake()

    def _resume(self, request: SubscribeRequest) -> None:
        """Resume from the position in ``request.resume_token`` (gateway/positions.py): every
        record of the subscription after it, numbered from ``resume_from + 1``, then live.
        Nothing of the subscription needs to be known here: the token says where it was."""
        assert request.subscription_id is not None and request.resume_from is not None
        assert request.resume_token is not None and self.principal is not None
        sub_id, seq = request.subscription_id, request.resume_from

        def unavailable(why: str, retry_after_ms: int | None = None) -> ProtocolError:
            return ProtocolError(
                ErrorCode.RESUME_UNAVAILABLE,
                f"cannot resume {sub_id!r} from seq {seq}: {why}",
                "resume_token",
                retry_after_ms,
            )

        if sub_id in self.conn.subs:
            raise unavailable("it is still active on this connection")
        if len(self.conn.subs) >= self._settings.max_subscriptions:
            raise ProtocolError(
                ErrorCode.TOO_MANY_SUBSCRIPTIONS,
                f"at most {self._settings.max_subscriptions} subscriptions per connection",
            )
        self._check_catch_up_slots()
        spec = resolve(request, self._settings.topics)
        self._entitled(spec.stream_type, spec.symbols, spec.raw)  # revoked meanwhile: refused
        try:
            position = self._tokens.open(
                request.resume_token,
                self.principal.owner,
                sub_id,
                spec_key(spec),
                self._hub.epoch(spec.topic),
            )
        except ResumeRefused as exc:
            raise unavailable(f"{exc}; subscribe again without resume_from") from None
        if position.seq != seq:
            raise unavailable(
                f"the resume_token is message {position.seq}'s: send the resume_token of the "
                "message whose seq you give (the last one you received)"
            )
        ends = self._hub.positions(spec.topic)
        starts = position.offsets
        if len(starts) != len(ends) or any(s > e for s, e in zip(starts, ends, strict=True)):
            raise unavailable(
                "this gateway has not yet read the topic up to that position (it started a "
                "moment ago, or the topic's partitions changed); retry in a few seconds",
                retry_after_ms=1_000,
            )
        sub = self._start(sub_id, spec, request, held=True, seq=seq)
        self.conn.put(self._ack(sub, request.interval_ms, ends, resumed_from=seq))
        self._statuses(sub)
        self._start_catch_up(sub, starts, ends, None)

    def _entitled(
        self,
        stream_type: StreamType,
        symbols: tuple[str, ...],
        raw: bool,
        request: SubscribeRequest | None = None,
    ) -> None:
        """Raises: ProtocolError: FORBIDDEN, naming only what was asked."""
        assert self.principal is not None
        replay_from = request.replay_from if request is not None else None
        self.principal.entitlements.check(stream_type, symbols, raw, replay_from, now_ms())

    def _check_replay(self, request: SubscribeRequest) -> None:
        """Raises: ProtocolError: over a replay limit (speed, range, replays running)."""
        settings = self._settings
        assert request.replay_from is not None
        speed = request.replay_speed
        if speed is not None and speed < settings.min_replay_speed:
            raise ProtocolError(
                ErrorCode.RATE_LIMITED,
                f"replay_speed must be at least {settings.min_replay_speed:g}",
                "replay_speed",
            )
        until = request.replay_to if request.replay_to is not None else now_ms()
        if until - request.replay_from > settings.max_replay_range_ms:
            raise ProtocolError(
                ErrorCode.RATE_LIMITED,
                f"a replay covers at most {settings.max_replay_range_ms // 1000:,} s; "
                "ask for a shorter range",
                "replay_from",
            )
        self._check_catch_up_slots()

    def _check_catch_up_slots(self) -> None:
        """Raises: ProtocolError: RATE_LIMITED when this connection or the gateway runs as
        many replays and resumes as it may."""
        if len(self._tasks) >= self._settings.max_replays_per_connection:
            raise ProtocolError(
                ErrorCode.RATE_LIMITED,
                f"at most {self._settings.max_replays_per_connection} replays or resumes at "
                "once per connection; wait for a replay_complete",
            )
        if self._replays.running >= self._replays.limit:
            raise ProtocolError(
                ErrorCode.RATE_LIMITED,
                "this gateway runs as many replays as it may; try again shortly",
            )

    def _start(
        self,
        sub_id: str,
        spec: StreamSpec,
        request: SubscribeRequest,
        held: bool,
        live: bool = True,
        seq: int = 0,
    ) -> Subscription:
        """A new subscription of ``request`` on this connection, acknowledged now (its first
        conflated message is due one interval later)."""
        sub = Subscription(
            id=sub_id,
            spec=spec,
            mode=request.mode,
            interval_s=request.interval_ms / 1000,
            max_pending=self._settings.max_pending_updates,
            seq=seq,
            held=held,
            live=live,
            status=request.status and live,
        )
        self._attach(sub)
        sub.begin(self._clock())
        return sub

    def _statuses(self, sub: Subscription) -> None:
        """A subscription with ``status: true`` hears each symbol's liveness at once."""
        if sub.status:
            at = now_ms()
            for symbol in sub.spec.symbols:
                state = self._hub.liveness.get(symbol)
                self.conn.put(status_frame(sub.id, symbol, state, at))

    def _attach(self, sub: Subscription) -> None:
        assert self.principal is not None
        owner, tokens, epoch = self.principal.owner, self._tokens, self._hub.epoch(sub.spec.topic)
        key = spec_key(sub.spec)

        def sign(seq: int, positions: Positions) -> str:
            return tokens.make(owner, sub.id, key, epoch, Position(seq, positions))

        sub.sign = sign
        self._registry.add(sub, self.conn)
        self.conn.subs[sub.id] = sub

    def _ack(
        self,
        sub: Subscription,
        interval_ms: int,
        positions: Positions,
        replay: bool = False,
        resumed_from: int | None = None,
    ) -> bytes:
        """The ack; its resume token is the position ``positions`` before the first message
        to come (``sub.seq`` so far)."""
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
                resume_token=sub.token(positions),
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
        self._replays.running += 1
        task.add_done_callback(lambda t: self._forget(sub.id, t))

    def _forget(self, sub_id: str, task: asyncio.Task[None]) -> None:
        self._replays.running -= 1
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

    def detach_all(self) -> None:
        """The connection ended: end its subscriptions. Nothing is kept: a client resumes a
        live one from the resume token of the last message it received, here or elsewhere."""
        for sub in list(self.conn.subs.values()):
            self._detach(sub)

    async def close(self) -> None:
        """End everything and wait for cancelled catch-ups to finish."""
        tasks = list(self._tasks.values())
        self.detach_all()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
