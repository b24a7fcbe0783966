"""One WebSocket connection's outgoing side: a bounded outbox and a writer task.

Nothing else ever awaits the client: the hub only marks subscriptions and calls ``wake``;
control messages and catch-up batches go through a bounded outbox. The writer sends the outbox
first, then one data message per subscription that is due, then sleeps until the next
conflation deadline, and ends when nothing is pending: an idle connection has no task, no
timer and no event of its own (heartbeats come from the service's one ticker, ``beat``). If
one send stays blocked longer than ``slow_client_timeout_s`` (the service's watchdog checks)
or a buffer overflows, the connection fails: its subscriptions end (the client resumes them), its
buffers freed, and the client gets close code 4000 "client too slow" once it reads again (or
its transport is aborted after ``close_timeout_s``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from starlette.websockets import WebSocket, WebSocketState

from gateway.channels import record_keys
from gateway.errors import CLOSE_SLOW_CLIENT, SlowClientError
from gateway.liveness import Liveness
from gateway.metrics import Metrics
from gateway.settings import GatewaySettings
from gateway.subscription import Positions, Subscription
from schemas.codec import columns_of, data_frame, data_frame_msgpack, encode, parse_many
from schemas.protocol import Heartbeat

__all__ = ["Connection", "now_ms"]

log = logging.getLogger(__name__)


def now_ms() -> int:
    """Server time for message ``timestamp`` fields: UTC epoch milliseconds."""
    return time.time_ns() // 1_000_000


class Connection:
    """The outgoing half of one client connection."""

    __slots__ = (
        "_abort",
        "_closer",
        "_metrics",
        "_on_fail",
        "_outbox",
        "_outbox_bytes",
        "_positions",
        "_settings",
        "_space",
        "_stopped",
        "_waiter",
        "_writer",
        "binary",
        "failed",
        "id",
        "next_beat",
        "sending_since",
        "subs",
        "websocket",
    )

    def __init__(
        self,
        websocket: WebSocket,
        settings: GatewaySettings,
        metrics: Metrics,
        positions: Callable[[str], Positions],
        on_fail: Callable[[Connection], None],
        abort: Callable[[], None] | None = None,
    ) -> None:
        self.id = uuid.uuid4().hex
        self.websocket = websocket
        self.subs: dict[str, Subscription] = {}
        #: Data messages as msgpack binary frames (negotiated: ``?format=msgpack`` or ``hello``)
        self.binary = False
        self.failed: BaseException | None = None
        #: Monotonic time the current send started, or None when not sending (watchdog).
        self.sending_since: float | None = None
        #: Monotonic time of the next heartbeat (the service's ticker sends it).
        self.next_beat = asyncio.get_running_loop().time() + settings.heartbeat_s
        self._settings = settings
        self._metrics = metrics
        self._positions = positions
        self._on_fail = on_fail
        self._abort = abort
        # Created when first needed: an idle connection holds none of these.
        # (frame, updates it carries, sent as a binary frame); the format is the frame's own,
        # fixed when it was made: a ``hello`` that switches formats leaves queued ones as they are
        self._outbox: list[tuple[bytes, int, bool]] = []
        self._outbox_bytes = 0  # held in the outbox: at most max_queued_bytes
        self._space: asyncio.Event | None = None  # only while a catch-up waits for room
        self._waiter: asyncio.Future[None] | None = None  # only while the writer sleeps
        self._writer: asyncio.Task[None] | None = None  # only while something is pending
        self._closer: asyncio.Task[None] | None = None
        self._stopped = False

    # --- called by the hub, the session and the service (never wait) ----------------------

    def wake(self) -> None:
        """Something may be due: run the writer (start it, or end its sleep)."""
        if self._stopped or self.failed is not None:
            return
        if self._writer is None:
            self._writer = asyncio.create_task(self._write_loop())
        elif self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def beat(self, now: float, liveness: Liveness) -> None:
        """Queue a heartbeat if one is due (the service's ticker calls this). With a ``status``
        subscription it carries each subscription's newest event time."""
        if now < self.next_beat:
            return
        self.next_beat = now + self._settings.heartbeat_s
        newest: dict[str, int | None] | None = None
        if any(sub.status for sub in self.subs.values()):
            newest = {}
            for sub in self.subs.values():
                times = [t for s in sub.spec.symbols if (t := liveness.get(s).last_event_ms)]
                newest[sub.id] = max(times) if times else None
        beat = Heartbeat(
            timestamp_ms=now_ms(), active_subscriptions=len(self.subs), subscriptions=newest
        )
        self.put(encode(beat))

    def fail(self, exc: BaseException) -> None:
        """Disconnect as too slow; frees the buffers at once, closes in the background."""
        if self.failed is not None:
            return
        self.failed = exc
        self._metrics.slow_disconnects += 1
        log.info("connection %s: disconnecting slow client: %s", self.id, exc)
        self._outbox.clear()
        self._outbox_bytes = 0
        self._free_space()
        self._on_fail(self)  # parks the subscriptions
        if self._writer is not None:
            self._writer.cancel()
        self._closer = asyncio.create_task(self._close_slow(), name=f"close-{self.id}")

    def put(self, frame: bytes, updates: int = 0, binary: bool = False) -> None:
        """Queue a control frame (ack, error, heartbeat, snapshot); fails the connection if the
        outbox is full, since a client that does not read its acks is not reading at all."""
        if self.failed is not None:
            return
        if len(self._outbox) >= self._settings.max_queued_frames:
            self.fail(SlowClientError(f"{len(self._outbox)} messages waiting"))
            return
        if self._outbox_bytes + len(frame) > self._settings.max_queued_bytes:
            self.fail(SlowClientError(f"{self._outbox_bytes:,} bytes waiting"))
            return
        self._outbox.append((frame, updates, binary))
        self._outbox_bytes += len(frame)
        self.wake()

    async def put_wait(self, frame: bytes, updates: int, binary: bool = False) -> None:
        """Queue a catch-up frame, waiting for room (replay and resume pace to the client).

        Raises:
            SlowClientError: the connection failed meanwhile.
        """
        while (
            len(self._outbox) >= self._settings.max_queued_frames // 2
            or self._outbox_bytes + len(frame) > self._settings.max_queued_bytes // 2
        ) and self._outbox:
            if self.failed is not None:
                raise SlowClientError("connection failed")
            if self._space is None:
                self._space = asyncio.Event()
            self._space.clear()
            await self._space.wait()
        if self.failed is not None:
            raise SlowClientError("connection failed")
        self._outbox.append((frame, updates, binary))
        self._outbox_bytes += len(frame)
        self.wake()

    def _free_space(self) -> None:
        if self._space is not None:
            self._space.set()

    # --- lifecycle ------------------------------------------------------------------------

    async def stop(self) -> None:
        """Stop the writer (and a pending slow close) after the client went away."""
        self._stopped = True
        for task in (self._writer, self._closer):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _close_slow(self) -> None:
        if self._writer is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
        try:
            if self.websocket.application_state is WebSocketState.CONNECTED:
                # Waits until the client drains its backlog below the transport's low-water
                # mark; a client that never reads again is cut off instead.
                await asyncio.wait_for(
                    self.websocket.close(CLOSE_SLOW_CLIENT, "client too slow"),
                    self._settings.close_timeout_s,
                )
        except (TimeoutError, RuntimeError, OSError):
            if self._abort is not None:
                self._abort()

    # --- the writer -----------------------------------------------------------------------

    async def _send(self, frame: bytes, updates: int = 0, binary: bool = False) -> None:
        loop = asyncio.get_running_loop()
        self.sending_since = loop.time()
        if binary:
            await self.websocket.send_bytes(frame)
        else:
            await self.websocket.send_text(frame.decode())
        self.sending_since = None
        m = self._metrics
        m.messages_sent += 1
        m.updates_sent += updates
        m.bytes_sent += len(frame)

    async def _write_loop(self) -> None:
        loop = asyncio.get_running_loop()
        outbox = self._outbox
        try:
            while True:
                now = loop.time()
                deadline: float | None = None
                due: list[Subscription] = []
                for sub in self.subs.values():
                    at = sub.due()
                    if at is None:
                        continue
                    if at <= now:
                        due.append(sub)
                    elif deadline is None or at < deadline:
                        deadline = at
                if not outbox and not due:
                    if deadline is None:
                        return  # nothing pending: the next wake starts a new writer
                    waiter = self._waiter = loop.create_future()
                    timer = loop.call_at(deadline, _resolve, waiter)
                    try:
                        await waiter
                    finally:
                        timer.cancel()
                        self._waiter = None
                    continue
                while outbox:
                    frame, updates, binary = outbox.pop(0)
                    self._outbox_bytes -= len(frame)
                    self._free_space()
                    await self._send(frame, updates, binary)
                for sub in due:
                    await self._flush(sub, loop.time())
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the client went away mid-send: the reader will notice
            log.debug("connection %s: writer stopped: %r", self.id, exc)
            self._stopped = True
        finally:
            self._writer = None

    async def _flush(self, sub: Subscription, now: float) -> None:
        if self.subs.get(sub.id) is not sub or sub.due() is None:
            return  # unsubscribed or emptied while an earlier send was waiting
        items = sub.take(now)
        if not items:
            return
        self.collect(sub)
        binary = self.binary
        frame = self.frame_for(sub, items, self._positions(sub.spec.topic))
        await self._send(frame, len(items), binary)

    def collect(self, sub: Subscription) -> None:
        """Add ``sub``'s drop and conflation counts to the metrics."""
        dropped, conflations = sub.collect_counts()
        self._metrics.updates_dropped += dropped
        self._metrics.conflations += conflations

    def frame_for(
        self,
        sub: Subscription,
        items: list[bytes],
        positions: Positions,
        parsed: list[Any] | None = None,
        binary: bool | None = None,
    ) -> bytes:
        """A data message of ``sub`` with the next seq and the resume token of ``positions``,
        where the topic stood once ``items`` were taken: JSON with ``items`` spliced in, or
        msgpack columns if ``binary`` (default: the connection's format now; from ``parsed``,
        the items already parsed, if given). Queue or send it as binary exactly when it is."""
        seq = sub.next_seq()
        token = sub.token(positions)
        stream = sub.spec.stream_type.value
        if self.binary if binary is None else binary:
            records = parse_many(items) if parsed is None else parsed
            columns = columns_of(records, record_keys(sub.spec.topic))
            return data_frame_msgpack(stream, sub.id, columns, len(items), now_ms(), seq, token)
        return data_frame(stream, sub.id, items, now_ms(), seq, token)

    @property
    def pending_updates(self) -> int:
        """Updates noted for this connection's subscriptions and not yet sent."""
        return sum(s.pending for s in self.subs.values())

    @property
    def queued_frames(self) -> int:
        """Frames waiting in the outbox (at most ``max_queued_frames``)."""
        return len(self._outbox)

    def describe(self) -> dict[str, Any]:
        """What ``GET /ws/connections?details=true`` shows of this connection, buffers included
        (what the server holds for it, whatever the client does)."""
        since = self.sending_since
        return {
            "connection_id": self.id,
            "pending_updates": self.pending_updates,
            "queued_frames": self.queued_frames,
            "queued_bytes": self._outbox_bytes,
            "send_blocked_s": (
                0.0 if since is None else round(asyncio.get_running_loop().time() - since, 3)
            ),
            "subscriptions": [
                {
                    "subscription_id": s.id,
                    "stream_type": s.spec.stream_type.value,
                    "symbols": list(s.spec.symbols),
                    "mode": s.mode,
                    "seq": s.seq,
                    "pending_updates": s.pending,
                }
                for s in self.subs.values()
            ],
        }


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
