"""Gateway settings: one frozen dataclass, read from ``FIML_GATEWAY_*`` environment variables.

Every limit the gateway enforces is here so that tests can shrink them (a 0.2 s heartbeat, a
tiny buffer) and operators can see them in one place. Defaults follow the seed: heartbeat every
30 s, 50 symbols a subscription, intervals of 100 ms to 60 s.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from typing import Any

__all__ = ["GatewaySettings"]

_DERIVED = ("fiml.prices", "fiml.quotes", "fiml.trades", "fiml.ohlcv", "fiml.raw")


def _bootstrap_default() -> str:
    return os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")


@dataclass(frozen=True, slots=True)
class GatewaySettings:
    """What one gateway process reads and how it treats its clients."""

    bootstrap: str = field(default_factory=_bootstrap_default)
    host: str = "127.0.0.1"
    port: int = 8000
    #: Logical topics (``schemas.topics``) the hub follows live; raw ticks are included so that
    #: ``params: {"source": "raw"}`` streams work live as well as in replay.
    topics: tuple[str, ...] = _DERIVED
    heartbeat_s: float = 30.0
    max_subscriptions: int = 20
    #: Frames (acks, errors, heartbeats, catch-up batches) a connection may have waiting.
    max_queued_frames: int = 64
    #: ... and their bytes (Centrifugo's 1 MiB): a client that does not read its acks and
    #: errors is not reading at all.
    max_queued_bytes: int = 1024 * 1024
    #: Updates a real-time or trades subscription may hold before it conflates (real-time) or
    #: is flushed early (trades); bounds memory per subscription.
    max_pending_updates: int = 2_000
    #: A send that the client does not absorb within this time gets it disconnected (4000).
    slow_client_timeout_s: float = 10.0
    #: How long a slow client gets to drain its backlog and receive the close frame (4000)
    #: before its connection is cut.
    close_timeout_s: float = 10.0
    #: Replay filters on each record's event_time_ms; the Kafka timestamps (publication time)
    #: bounding the read are widened by this much on both sides.
    replay_margin_ms: int = 60_000
    #: Records spliced into one catch-up (replay, resume) data message.
    catchup_batch: int = 500
    #: Signs resume tokens (gateway/positions.py): every gateway that should resume the
    #: others' subscriptions needs the same one (32 bytes or more). Empty: the file
    #: ``$FIML_HOME/gateway-resume.key``, made at first start (gateways on one machine share it).
    resume_secret: str = ""
    #: Records per partition read at start-up to fill the last-value cache for snapshots, then
    #: live on ...
    warm_records: int = 1_000
    #: ... and at most this many more per partition read back behind them, in the background,
    #: for symbols quiet for longer (a restarted gateway still has their last value).
    backfill_records: int = 1_000_000
    #: Candles returned at most by ``GET /ohlcv/{symbol}`` (and the highest ``limit``).
    max_candles: int = 5_000
    #: The candle index ``GET /ohlcv`` answers from (gateway/candle_index.py): a SQLite file
    #: fed from ``fiml.ohlcv``. Empty: a file of this gateway's own in
    #: ``$FIML_HOME/gateway-candles/`` (the first one no running gateway holds), kept across
    #: restarts; a path (one gateway's only); ``:memory:`` (rebuilt at every start); ``off``:
    #: no index, ``GET /ohlcv`` scans the topic.
    candle_index: str = ""
    #: How long a ``GET /ohlcv`` whose range reaches the present may wait for the index to read
    #: the topic up to its end as it was when the request came (then 503 with Retry-After).
    candle_index_wait_s: float = 2.0
    #: Compression is offered; each client chooses (a client that does not ask gets none).
    ws_per_message_deflate: bool = True
    #: Keep a compressor per compressed connection between messages (better ratio on small
    #: messages, about 40 KiB more per connection); off: each message compressed on its own.
    ws_deflate_context_takeover: bool = False
    ws_max_size: int = 64 * 1024
    # --- who may connect, and the published limits (docs/WEBSOCKET.md, "Limits") ---------
    #: Anonymous clients: ``auto`` (allowed when ``host`` is loopback: the demo and seed
    #: clients), ``allow`` or ``deny`` (an API key or a JWT is required).
    anonymous: str = "auto"
    #: The API key file (``fiml keys``); empty: ``$FIML_HOME/gateway-keys.json``.
    keys_file: str = ""
    #: JWTs: HS256 with this secret, and/or ES256 / EdDSA with keys from a JWKS file or URL.
    jwt_secret: str = ""
    jwt_jwks_file: str = ""
    jwt_jwks_url: str = ""
    jwt_audience: str = ""
    jwt_issuer: str = ""
    #: A connection without credentials must send an ``auth`` message within this time.
    auth_timeout_s: float = 5.0
    #: Browser origins allowed to open a WebSocket (``*``: any). Empty: the gateway's own
    #: origin (its dashboard), and clients that send no Origin (not browsers).
    allowed_origins: tuple[str, ...] = ()
    #: Host headers the gateway answers (``*.example.com`` patterns); empty: any. Behind a
    #: proxy, the names clients use: a request for another host gets 400.
    trusted_hosts: tuple[str, ...] = ()
    max_connections_per_ip: int = 256
    max_connections_per_key: int = 64
    #: Client messages a second per connection (a token bucket of this size), and how many
    #: refused messages in a row close the connection.
    max_messages_per_s: float = 20.0
    max_rate_violations: int = 20
    max_replays_per_connection: int = 2
    max_replays: int = 32  # running at once in this gateway process
    #: The share of this gateway's event loop that replays and resumes take at most, together
    #: (gateway/budget.py); the rest is live data's.
    replay_loop_share: float = 0.8
    #: Replays play at least this fast (1.0: as fast as the data happened).
    min_replay_speed: float = 1.0
    #: The longest replay (``replay_to`` - ``replay_from``, or up to now).
    max_replay_range_ms: int = 7 * 86_400_000
    #: A connection is closed after this long; the client reconnects (and resumes).
    max_connection_s: float = 86_400.0

    @classmethod
    def from_env(cls, **overrides: Any) -> GatewaySettings:
        """Defaults, then ``FIML_GATEWAY_<FIELD>`` variables, then ``overrides``.

        Raises:
            ValueError: a variable does not parse as its field's type.
        """
        base = cls()
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = os.environ.get(f"FIML_GATEWAY_{f.name.upper()}")
            if raw is None:
                continue
            current = getattr(base, f.name)
            if isinstance(current, bool):
                values[f.name] = raw.strip().lower() in ("1", "true", "yes", "on")
            elif isinstance(current, tuple):
                values[f.name] = tuple(t.strip() for t in raw.split(",") if t.strip())
            else:
                values[f.name] = type(current)(raw)
        values.update(overrides)
        return replace(base, **values)
